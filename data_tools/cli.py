"""Command line of the dataset builders: ``python -m data_tools {smotion,smnist} ...``.

The same click commands are registered under ``spikecodec simulate``.
"""

from __future__ import annotations

import time

import click

from spikecodec import DEFAULT_CONVERSION_RATE


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command("smotion")
@click.option(
    "--split", type=click.Choice(["train", "val", "test"]), required=True, help="Photo split."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="h5 file to write.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed.")
@click.option(
    "--num-sequences",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N sequences (default: all).",
)
@click.option("--height", type=click.IntRange(min=8), default=250, show_default=True)
@click.option("--width", type=click.IntRange(min=8), default=400, show_default=True)
@click.option(
    "--frames",
    "num_frames",
    type=click.IntRange(min=2),
    default=301,
    show_default=True,
    help="Spike frames per sequence.",
)
@click.option(
    "--rate",
    type=float,
    default=DEFAULT_CONVERSION_RATE,
    show_default=True,
    help="Conversion rate (spikes per frame at I = 1).",
)
@click.option(
    "--dark-current",
    type=float,
    default=0.0,
    show_default=True,
    help="Mean extra-spike probability per pixel and frame.",
)
@click.option(
    "--threshold-sigma",
    type=float,
    default=0.0,
    show_default=True,
    help="Per-pixel threshold mismatch (relative std).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def smotion_command(
    split,
    output,
    seed,
    num_sequences,
    height,
    width,
    num_frames,
    rate,
    dark_current,
    threshold_sigma,
    progress,
) -> None:
    """Build S-Motion sequences (moving camera over real photographs) into an h5 file."""
    from data_tools.smotion import write_smotion

    started = time.perf_counter()
    try:
        metas = write_smotion(
            output,
            split,
            seed,
            num_sequences,
            height=height,
            width=width,
            num_frames=num_frames,
            progress=progress,
            rate=rate,
            dark_current=dark_current,
            threshold_sigma=threshold_sigma,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(
        f"wrote {len(metas)} S-Motion {split} sequences to {output} "
        f"in {time.perf_counter() - started:.1f} s"
    )


@click.command("smnist")
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    required=True,
    help="Per class: digit i is test when i % 500 >= 400.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="h5 file to write.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed.")
@click.option(
    "--num-clips",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N clips (class-balanced; default: all).",
)
@click.option(
    "--frames",
    "num_frames",
    type=click.IntRange(min=2),
    default=200,
    show_default=True,
    help="Spike frames per clip.",
)
@click.option(
    "--rate",
    type=float,
    default=DEFAULT_CONVERSION_RATE,
    show_default=True,
    help="Conversion rate.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def smnist_command(split, output, seed, num_clips, num_frames, rate, progress) -> None:
    """Build S-MNIST clips (moving MNIST digits, labels kept) into an h5 file."""
    from data_tools.smnist import write_smnist

    try:
        summary = write_smnist(
            output, split, seed, num_clips, num_frames=num_frames, rate=rate, progress=progress
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(
        f"wrote {summary['num_clips']} S-MNIST {split} clips to {output} "
        f"in {summary['seconds']:.1f} s"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Dataset builders of spikecodec: S-Motion and S-MNIST (see data_tools/README.md)."""


cli.add_command(smotion_command)
cli.add_command(smnist_command)
