"""The spikecodec command line (click).

Each command keeps the work in library functions; the command parses options, reports progress
and turns library errors into one-line messages with a non-zero exit status.
"""

from __future__ import annotations

import click

from spikecodec import (
    DEFAULT_CODEC_MODEL, DEFAULT_EVAL_MODEL, DEFAULT_GOP, DEFAULT_QUALITY, DEFAULT_RECONSTRUCTION_MODEL, DEFAULT_STRIDE, __version__,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spikecodec")
def main() -> None:
    """Compress spike-camera streams for machines and people (SCI).

    \b
    Typical use:
      spikecodec simulate still photo.png -o scene.dat     # make a spike stream
      spikecodec encode scene.dat -o scene.sci              # raw spikes -> bitstream
      spikecodec decode scene.sci -o scene.mp4              # bitstream -> reconstructed video
      spikecodec classify digit.sci --top 3                 # class label from a bitstream
      spikecodec reconstruct scene.dat -o scene.mp4         # TFP / TFI video from raw spikes
      spikecodec info stream.sci --json                     # inspect a bitstream
    """


# --- section: simulate / datasets (owner: simulator + data_tools) ---------------------------


@main.group("simulate")
def simulate_group() -> None:
    """Simulate spike streams: a still image seen by a moving camera, or the datasets.

    \b
      spikecodec simulate still photo.png -o scene.dat --frames 400 --speed 0.3
      spikecodec simulate smotion --split test -o data/smotion_test.h5
      spikecodec simulate smnist --split train -o data/smnist_train.h5
    """


@simulate_group.command("still")
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Spike stream to write: .dat (raw camera layout), .npz or .h5.")
@click.option("--frames", "num_frames", type=click.IntRange(min=1), default=400, show_default=True,
              help="Spike frames to simulate.")
@click.option("--speed", type=click.FloatRange(min=0, max=50), default=0.3, show_default=True,
              help="Mean image-plane speed of the camera motion, px per spike frame.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of motion and spikes.")
@click.option("--height", "-H", type=click.IntRange(min=2), default=250, show_default=True)
@click.option("--width", "-W", type=click.IntRange(min=2), default=400, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, max=1, min_open=True), default=0.6,
              show_default=True,
              help="Conversion rate: firing probability per frame at intensity 1.")
@click.option("--rotation/--no-rotation", default=True, show_default=True,
              help="Let the camera rotate as well as translate.")
@click.option("--zoom/--no-zoom", default=True, show_default=True, help="Let the camera zoom.")
@click.option("--dark-current", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, help="Mean extra-spike probability per pixel and spike frame.")
@click.option("--threshold-sigma", type=click.FloatRange(min=0, max=1), default=0.0,
              show_default=True, help="Per-pixel threshold mismatch (relative standard deviation).")
@click.option("--gt", "gt_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the ground truth to this .npz: gt (T, H, W) uint8 intensity * 255 "
                   "at every spike frame, moments (spike index of each gt frame).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def simulate_still_command(image, output, num_frames, speed, seed, height, width, rate, rotation,
                           zoom, dark_current, threshold_sigma, gt_path, force) -> None:
    """Simulate a spike stream of IMAGE seen by a randomly moving camera.

    The camera translates along a turning path (and rotates / zooms unless told not to) at a
    measured mean speed of --speed px per spike frame; the image is upscaled if the path needs
    more than it holds. Without IMAGE, the shipped sample photograph is used.
    """
    import os
    import secrets
    import time
    from pathlib import Path

    import numpy as np

    from spikecodec import io as spike_io
    from spikecodec import simulate as sim

    started = time.perf_counter()
    outputs = [Path(output)] + ([Path(gt_path)] if gt_path else [])
    if gt_path and Path(gt_path).suffix.lower() != ".npz":
        raise click.BadParameter("the ground truth is written as .npz", param_hint="--gt")
    for path in outputs:
        if path.exists() and not force:
            raise click.ClickException(f"{path} exists; use --force to overwrite it")
    if image is None:
        image = Path(__file__).resolve().parent / "data" / "sample.png"
    try:
        import imageio.v3 as iio

        picture = sim.to_intensity(iio.imread(image))
    except (OSError, ValueError, SyntaxError) as error:
        raise click.ClickException(f"cannot use image {image}: {error}") from None

    rng = np.random.default_rng(seed)
    try:
        motion = sim.random_camera_motion(rng, num_frames, speed, height, width,
                                          rotation=rotation, zoom=zoom)
        working, motion = sim.fit_motion_to_image(picture, motion, rng, height, width)
        frames = sim.iter_still_intensity(working, motion, height, width)
        stream = sim.iter_simulation(frames, rate=rate, dark_current=dark_current,
                                     threshold_sigma=threshold_sigma, intensity_levels=256,
                                     seed=rng.spawn(1)[0])
        gt = np.empty((num_frames, height, width), dtype=np.uint8) if gt_path else None
        spike_count = 0
        block: list[np.ndarray] = []
        with spike_io.open_spike_writer(output, height, width) as writer:
            for t, (spikes, intensity) in enumerate(stream):
                block.append(spikes)
                spike_count += int(spikes.sum())
                if gt is not None:
                    gt[t] = np.round(intensity * 255.0)
                if len(block) == 256:
                    writer.write(np.stack(block))
                    block = []
            if block:
                writer.write(np.stack(block))
        if gt is not None:
            gt_target = Path(gt_path)
            temp = gt_target.parent / f".{gt_target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            try:
                with open(temp, "xb") as handle:
                    np.savez_compressed(
                        handle, gt=gt, moments=np.arange(num_frames, dtype=np.int64),
                        conversion_rate=np.float64(rate), mean_speed=np.float64(
                            motion.mean_speed(height, width)),
                        height=np.int64(height), width=np.int64(width),
                    )
                os.replace(temp, gt_target)
            finally:
                temp.unlink(missing_ok=True)
    except (ValueError, RuntimeError, OSError) as error:
        raise click.ClickException(str(error)) from None
    firing = spike_count / (num_frames * height * width)
    click.echo(
        f"simulated {num_frames} spike frames of {height}x{width} at mean speed "
        f"{motion.mean_speed(height, width):.3f} px/frame (firing rate {firing:.3f}) -> "
        f"{', '.join(map(str, outputs))} in {time.perf_counter() - started:.1f} s"
    )


def _register_dataset_commands() -> None:
    from data_tools.cli import smnist_command, smotion_command

    simulate_group.add_command(smotion_command, "smotion")
    simulate_group.add_command(smnist_command, "smnist")


_register_dataset_commands()

# --- end section: simulate -------------------------------------------------------------------


# --- section: reconstruct (owner: baselines) -------------------------------------------------

def _spike_input_options(function):
    """--height/--width/--head-columns, shared by every command that reads a spike stream."""
    from spikecodec import DEFAULT_HEIGHT, DEFAULT_WIDTH

    function = click.option(
        "--head-columns", type=click.IntRange(min=0), default=0, show_default=True,
        help="Extra columns at the end of each stored line to drop (16 for 416-wide cameras).",
    )(function)
    function = click.option(
        "--width", "-W", type=click.IntRange(min=1), default=None,
        help=f"Pixels per line of a .dat file [default: {DEFAULT_WIDTH}]; .npz/.h5 store it.",
    )(function)
    function = click.option(
        "--height", "-H", type=click.IntRange(min=1), default=None,
        help=f"Lines per frame of a .dat file [default: {DEFAULT_HEIGHT}]; .npz/.h5 store it.",
    )(function)
    return function


@main.command()
@click.argument("spikes_path", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="OUT.mp4 (plus OUT.timestamps.json), OUT.npz, OUT.h5, or a directory for PNGs.")
@_spike_input_options
@click.option("--method", type=click.Choice(["tfp", "tfi", "sci"]), default="tfp", show_default=True,
              help="TFP: spike count over a window; TFI: inverse inter-spike interval; sci: the "
                   "learned SCI analysis path on uncompressed features (--model).")
@click.option("--model", "model_id", default=DEFAULT_RECONSTRUCTION_MODEL, show_default=True,
              help="Registered reconstruction model for --method sci.")
@click.option("--window", type=click.IntRange(min=1), default=41, show_default=True,
              help="TFP window in spike frames, centred on each moment.")
@click.option("--stride", type=click.IntRange(min=1), default=20, show_default=True,
              help="Spike frames between output frames (20 = 1,000 fps at 20 kHz).")
@click.option("--phase", type=click.IntRange(min=0), default=None,
              help="A spike index that is a moment; default: the first whose window fits.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=0.6, show_default=True,
              help="Conversion rate: firing probability per frame at intensity 1.")
@click.option("--spike-rate", type=click.FloatRange(min=0, min_open=True), default=20_000,
              show_default=True, help="Spike frames per second of the camera (for timestamps).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Playback rate of an .mp4 output (not the capture rate).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def reconstruct(spikes_path, output, height, width, head_columns, method, model_id, window, stride,
                phase, rate, spike_rate, fps, force):
    """Reconstruct a video from raw spikes IN (.dat, .npz, .h5) with TFP, TFI or the SCI model.

    Each output frame belongs to a moment (a spike-frame index), recorded as its timestamp.
    """
    import time

    from spikecodec.reconstruct import reconstruct_stream

    started = time.perf_counter()
    try:
        frames, moments = reconstruct_stream(
            spikes_path, method=method, window=window, stride=stride, phase=phase, rate=rate,
            height=height, width=width, head_columns=head_columns, progress=True,
            model_id=model_id,
        )
        from spikecodec.outputs import write_frames

        written = write_frames(output, frames, moments, spike_rate_hz=spike_rate, fps=fps,
                               force=force, metadata={"method": method, "source": str(spikes_path)})
    except (ValueError, OSError, KeyError, RuntimeError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{method.upper()}: {len(moments)} frames (moments {moments[0]}..{moments[-1]}, "
               f"stride {stride}) -> {', '.join(map(str, written))} "
               f"in {time.perf_counter() - started:.1f} s")


# --- end section: reconstruct ----------------------------------------------------------------


# --- section: encode / decode (owner: codec) -------------------------------------------------


def _codec_errors():
    from spikecodec.bitstream import BitstreamError
    from spikecodec.models.registry import ModelNotFoundError, WeightsError

    return (ValueError, OSError, BitstreamError, ModelNotFoundError, WeightsError)


@main.command("encode")
@click.argument("spikes_path", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .sci bitstream to write.")
@_spike_input_options
@click.option("--quality", type=click.IntRange(min=0), default=DEFAULT_QUALITY, show_default=True,
              help="Rate point of the model, 0 = lowest rate (the shipped model has 0..3).")
@click.option("--stride", type=click.IntRange(min=1), default=DEFAULT_STRIDE, show_default=True,
              help="Spike frames between coded moments (20 = a 1,000 fps video at 20 kHz).")
@click.option("--phase", type=click.IntRange(min=0), default=None,
              help="A spike index that is a moment; default: the first whose FEM window fits.")
@click.option("--gop", type=click.IntRange(min=1), default=DEFAULT_GOP, show_default=True,
              help="Moments per group of pictures: an I frame, then P frames (seek granularity).")
@click.option("--model", "model_id", default=DEFAULT_CODEC_MODEL, show_default=True,
              help="Registered codec (FEM + feature codec) to encode with.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def encode_command(spikes_path, output, height, width, head_columns, quality, stride, phase, gop, model_id,
                   threads, force):
    """Encode raw spikes IN (.dat, .npz, .h5) into a .sci bitstream.

    The stream is read in blocks (memory stays bounded whatever its length) and the output appears
    only when complete: a failure or Ctrl-C leaves no partial file.

    \b
      spikecodec encode drive.dat -o drive.sci
      spikecodec encode cam.dat -H 1000 -W 1000 --quality 0 -o cam.sci
    """
    from spikecodec.codec import encode_file

    try:
        result = encode_file(spikes_path, output, height=height, width=width, head_columns=head_columns,
                             quality=quality, stride=stride, phase=phase, gop=gop, model=model_id, force=force,
                             progress=True, threads=threads)
    except _codec_errors() as error:
        raise click.ClickException(str(error)) from None
    frames = result.header.spike_frames
    click.echo(f"encoded {frames} spike frames ({result.frames} moments, quality {quality}) -> {output}: "
               f"{result.bytes} bytes, {result.bpp:.5f} bpp ({1 / result.bpp:.0f}x smaller than raw), "
               f"{result.seconds:.1f} s ({frames / result.seconds:.0f} spike frames/s)")


@main.command("decode")
@click.argument("sci_path", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="OUT.mp4 (plus OUT.timestamps.json), OUT.npz / OUT.h5 (float32 frames in [0, 1] and "
                   "timestamps), or a directory for PNGs.")
@click.option("--at", "at", type=click.IntRange(min=0), default=None,
              help="Decode only the frame nearest this spike index (reads from the GOP that holds it).")
@click.option("--analysis", default=None,
              help="Registered reconstructor to use instead of the one the codec names.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Playback rate of an .mp4 output (not the capture rate).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def decode_command(sci_path, output, at, analysis, fps, threads, force):
    """Decode a .sci bitstream IN into a reconstructed video or frame arrays.

    Every frame records its moment (spike index). A full decode checks the stream's content hash.

    \b
      spikecodec decode drive.sci -o drive.mp4
      spikecodec decode drive.sci -o frame.npz --at 12000
    """
    from spikecodec.codec import decode_file

    try:
        result = decode_file(sci_path, output, at=at, analysis=analysis, fps=fps, force=force, progress=True,
                             threads=threads)
    except _codec_errors() as error:
        raise click.ClickException(str(error)) from None
    checked = "content hash verified" if result.hash_verified else "partial decode, hash not checked"
    click.echo(f"decoded {len(result.moments)} frames (moments {result.moments[0]}..{result.moments[-1]}) -> "
               f"{', '.join(map(str, result.paths))} in {result.seconds:.1f} s ({checked})")


# --- end section: encode / decode ------------------------------------------------------------


# --- section: classify (owner: classification) -----------------------------------------------


@main.command("classify")
@click.argument("sci_path", metavar="IN", type=click.Path(dir_okay=False))
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also list the K most probable classes with their probabilities.")
@click.option("--model", "model_id", default=None,
              help="Registered classifier [default: the one installed for the stream's codec].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
def classify_command(sci_path, top, model_id, as_json, threads):
    """The class label of the clip in a .sci bitstream IN, straight from its decoded features.

    Every coded moment is classified (AFR on the decoded features and refined motion) and the
    clip's probabilities are the mean over its moments. No video is reconstructed.

    \b
      spikecodec classify digit.sci --top 3
    """
    import json

    from spikecodec.classification import classify_stream

    try:
        result = classify_stream(sci_path, model=model_id, top=top, threads=threads)
    except _codec_errors() as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"label {result['label']}  ({result['moments']} moments, classifier {result['classifier']})")
    if top > 1:
        for entry in result["top"]:
            click.echo(f"  {entry['class']}: {entry['probability']:.4f}")


def _float_list(text: str, option: str) -> tuple[float, ...]:
    """'2,1,1' -> (2.0, 1.0, 1.0); '' -> ()."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}", param_hint=option) from None


@main.command("train-classifier")
@click.option("--data", default="data/smnist_train.h5", show_default=True,
              help="S-MNIST train split (spikecodec simulate smnist --split train -o ...); several files "
                   "(renderings with other --seed) separated by commas.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--codec", default=DEFAULT_CODEC_MODEL, show_default=True, help="Frozen FEM + codec.")
@click.option("--reference", is_flag=True, help="Train the reference head on TFP41 images (1 bpp) instead.")
@click.option("--raw-share", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Share of batches on uncompressed features (1: no codec needed; --codec may then be a FEM id).")
@click.option("--init", "init", default=None, type=click.Path(dir_okay=False),
              help="classifier.safetensors to start from (e.g. a run on uncompressed features).")
@click.option("--steps", type=click.IntRange(min=1), default=1500, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True,
              help="Peak learning rate (cosine decay).")
@click.option("--quality-weights", default="", metavar="W0,W1,...",
              help="Relative odds of each codec quality in the compressed batches (default: equal).")
@click.option("--head-only", is_flag=True, help="Freeze the AFR (about 3x faster steps); train the head only.")
@click.option("--augment-degrees", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Rotate the fused features of each sample by up to this many degrees.")
@click.option("--augment-scale", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="... and scale them by 1 +- up to this.")
@click.option("--augment-shift", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="... and shift them by up to this many pixels.")
@click.option("--strides", default=f"{DEFAULT_STRIDE},{2 * DEFAULT_STRIDE}", show_default=True,
              metavar="S1,S2,...",
              help="Encoder strides to train for: each batch pairs its moment with the neighbours at one of "
                   "them (every moment of a clip at the smallest stride is trained on).")
@click.option("--centres", default="", metavar="T1,T2,...",
              help="Moments (spike-frame indices) to train on; default: every moment of a clip at the smallest "
                   "stride.")
@click.option("--decoded-motion", is_flag=True,
              help="The AFR reads the codec's refined motion on decoded features (the registry entry of such a "
                   "head must say decoded_motion=True); by default it estimates motion itself, as on raw features.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
def train_classifier_command(data, out_dir, codec, reference, raw_share, init, steps, batch_size, lr,
                             quality_weights, head_only, augment_degrees, augment_scale, augment_shift, strides,
                             centres, decoded_motion, threads, resume):
    """Train the S-MNIST classification head on frozen FEM + codec features (stage b/c for the task)."""
    from spikecodec.classification import ClassifierTrainConfig, train_classifier

    try:
        config = ClassifierTrainConfig(data=data, codec=codec, reference=reference, raw_share=raw_share, init=init,
                                       steps=steps, batch_size=batch_size, lr=lr, threads=threads,
                                       quality_weights=_float_list(quality_weights, "--quality-weights"),
                                       head_only=head_only, augment_degrees=augment_degrees,
                                       augment_scale=augment_scale, augment_shift=augment_shift,
                                       strides=_float_list(strides, "--strides"), decoded_motion=decoded_motion,
                                       centres=_float_list(centres, "--centres"))
        result = train_classifier(config, out_dir, resume=resume)
    except _codec_errors() as error:
        raise click.ClickException(str(error)) from None
    for name, digest in result["exported"].items():
        click.echo(f"wrote {out_dir}/{name} sha256={digest}")


# --- end section: classify -------------------------------------------------------------------


# --- section: info (owner: bitstream) --------------------------------------------------------


def _info_text(summary, path: str) -> str:
    """Human-readable report of a StreamSummary (``spikecodec info`` without --json)."""
    lines = [f"file           {path} ({summary.file_size} bytes)"]
    if summary.version is not None:
        lines.append(f"format         SCI {summary.version[0]}.{summary.version[1]}")
    h = summary.header
    if h is not None:
        lines += [
            f"stream         {h.height} x {h.width} px, {h.spike_frames} spike frames at "
            f"{h.spike_rate_hz} Hz",
            f"moments        window {h.window}, stride {h.stride}, phase {h.phase}, "
            f"GOP {h.gop_length}",
            f"quality        {h.quality} ({'lossless' if h.lossless else 'lossy'})",
            f"conversion     {h.conversion_rate:g}",
            f"model          {h.model_id} (weights sha256 {h.model_sha256.hex()})",
            f"entropy coder  {h.entropy_coder}",
        ]
    kinds = [f.frame_type for f in summary.frames]
    lines.append(f"frames         {len(kinds)} ({kinds.count('I')} I, {kinds.count('P')} P)")
    if summary.bpp is not None:
        lines.append(f"bpp            {summary.bpp:.6f}")
    if summary.frames:
        lines.append("    #  type  spike_t     bytes  latents (name[shape]: string bytes)")
        for f in summary.frames:
            latents = "  ".join(
                f"{lt['name']}[{'x'.join(map(str, lt['shape']))}]: "
                + "+".join(map(str, lt["string_sizes"]))
                for lt in f.latents
            )
            lines.append(
                f"{f.moment_index:5d}  {f.frame_type:4s}  {f.spike_time:7d}  {f.size:8d}  {latents}"
            )
    for item in summary.info:
        lines.append(f"info unit      {item}")
    for unit_type, offset in summary.skipped_units:
        lines.append(f"skipped        unknown ancillary unit {unit_type!r} at byte {offset}")
    if summary.error is None:
        seek = summary.seek_index
        lines.append(
            f"integrity      {summary.units_checked} unit CRCs OK, frame count matches the end "
            f"unit, seek index {'absent' if seek is None else f'OK ({len(seek)} I frames)'}"
        )
        lines.append(
            f"end hash       sha256 {summary.end.content_hash.hex()} (content hash of the "
            "latents; checked when decoding)"
        )
    for warning in summary.warnings:
        lines.append(f"warning        {warning}")
    if summary.error is not None:
        lines.append(f"DAMAGED        {type(summary.error).__name__}: {summary.error}")
    return "\n".join(lines)


@main.command("info")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def info(file: str, as_json: bool) -> None:
    """Show what is inside a .sci bitstream and check its integrity.

    Reports the sequence header, each frame's type, moment, spike time and size, the rate in
    bits per spike pixel, and whether every CRC, the frame count and the seek index check out.

    \b
    Exit status:
      0  valid
      3  damaged: truncated, CRC mismatch, malformed or implausible unit, unknown critical unit
      4  not a .sci file (bad signature)
      5  written by a newer, incompatible format version
      6  decodable, but an ancillary unit (seek index, info) is damaged and was ignored
      1  the file could not be read; 2  usage error
    A damaged file gets a one-line reason on stderr.
    """
    import json

    from spikecodec import bitstream

    try:
        summary = bitstream.inspect(file)
    except OSError as e:
        click.echo(f"error: cannot read {file}: {e.strerror or e}", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(_info_text(summary, file))
    if summary.error is not None:
        reason = str(summary.error).replace("\n", " ")
        click.echo(f"error: {file}: {type(summary.error).__name__}: {reason}", err=True)
    elif summary.warnings:
        click.echo(f"warning: {file}: {summary.warnings[0]}", err=True)
    raise SystemExit(summary.exit_status)


# --- end section: info -----------------------------------------------------------------------


# --- section: eval (owner: evaluation) -------------------------------------------------------

# exit status of `eval` when some inputs failed (their errors are in the results)
EVAL_PARTIAL_FAILURE_EXIT = 3


@main.command("eval")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for results.json and results.csv (created if missing).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inputs evaluated in parallel processes.")
@click.option("--stride", type=click.IntRange(min=1), default=20, show_default=True,
              help="Spike frames between evaluated moments.")
@click.option("--qps", default="22:47:5", show_default=True,
              help="Constant QPs of the x265 / VVC anchors: a list (22,27,32) or start:stop:step.")
@click.option("--gop", type=click.IntRange(min=1), default=32, show_default=True,
              help="Intra period of the video anchors, in frames (our codec's GOP).")
@click.option("--methods", default="ours,tfp41,tfi,ours-raw,lossless", show_default=True,
              help="ours: our codec at every quality of --codec-model; reconstructions coded by the "
                   "video anchors (tfp41, tfi, ours-raw: the learned model on uncompressed features); "
                   "lossless (raw, zstd, xz, JBIG).")
@click.option("--codecs", default="x265,vvc", show_default=True,
              help="Video anchors coding each reconstruction (x265, vvc, or none).")
@click.option("--model", "model_id", default=DEFAULT_EVAL_MODEL, show_default=True,
              help="Registered reconstruction model for ours-raw (default: the analysis of the codec's FEM).")
@click.option("--codec-model", default=DEFAULT_CODEC_MODEL, show_default=True,
              help="Registered codec for ours.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most N items (sequences, clips, manifest entries) per input file.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads per coder and per torch process [default: the coders' own; with "
                   "--jobs, cpus / jobs].")
@click.option("--force", is_flag=True, help="Replace results already in the output directory.")
@click.option("--update", is_flag=True,
              help="Keep the results in the output directory and replace only the rows of the --methods run "
                   "now (same other settings), e.g. --methods ours after a codec changed.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def eval_command(inputs, out_dir, jobs, stride, qps, gop, methods, codecs, model_id, codec_model, limit,
                 threads, force, update, no_progress):
    """Rate-distortion points of our codec and of the anchors on INPUTS.

    INPUTS are S-Motion / S-MNIST .h5 files (every sequence or clip is one input) or JSON
    manifests of spike files with ground truth:

    \b
      {"inputs": [{"path": "drive.dat", "height": 250, "width": 400,
                   "ground_truth": "drive_gt.npz", "spike_index": [100, 200]}]}

    Our codec is run at every quality (method ours: the whole .sci file counts). Each
    reconstruction (TFP41, TFI, ours-raw) at the moments every --stride spike frames is coded
    with x265 and VVC at every QP (methods tfp41+x265, tfi+vvc, ...); lossless coders code the raw
    spikes. One row per (input, method, rate point) with bpp over the spike pixels, PSNR and SSIM
    against the ground truth, encode / decode seconds. A failed input is reported and the others
    go on (exit status 3 when some failed). Then: spikecodec bdrate DIR --anchor ours-raw+x265

    \b
      spikecodec eval data/smotion_test.h5 -o report/ --jobs 2
    """
    from spikecodec.evaluation import EvaluationError, evaluate, parse_codecs, parse_methods, parse_qps

    try:
        qp_list = parse_qps(qps)
        method_names = parse_methods(methods)
        codec_list = parse_codecs(codecs)
        summary = evaluate(
            inputs, out_dir, stride=stride, qps=qp_list, gop=gop, methods=method_names, codecs=codec_list,
            model_id=model_id, codec_model=codec_model, limit=limit, jobs=jobs, threads=threads,
            progress=not no_progress, force=force, update=update,
        )
    except (EvaluationError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    for reason in summary.skipped:
        click.echo(f"skipped: {reason}", err=True)
    for error in summary.errors:
        click.echo(f"error: {error['input']} [{error['method']}]: {error['error']}", err=True)
    click.echo(f"{summary.items} input(s), {summary.failed_items} failed, {len(summary.rows)} rows "
               f"-> {summary.results_json}, {summary.results_csv}")
    if summary.failed_items and summary.failed_items == summary.items:
        raise click.ClickException("every input failed")
    if summary.failed_items:
        raise SystemExit(EVAL_PARTIAL_FAILURE_EXIT)


@main.command("bdrate")
@click.argument("results_dir", metavar="DIR", type=click.Path(exists=True))
@click.option("--anchor", required=True,
              help="Method every other one is compared with, e.g. tfp41+x265 or ours-raw+x265.")
@click.option("--method", "interpolation", type=click.Choice(["pchip", "akima"]), default="pchip",
              show_default=True, help="Bjontegaard interpolation.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="RD plot PNG to write [default: DIR/rd.png].")
def bdrate_command(results_dir, anchor, interpolation, plot_path):
    """BD-rate and BD-PSNR of every method in DIR/results.json against --anchor.

    Per input, each method's Pareto points are compared with the anchor's on the same input; the
    mean is over the inputs where a value exists. Curves whose PSNR (or rate) ranges overlap by
    less than 75% are reported as "insufficient overlap (NN%)", not as a number. Prints Markdown
    tables and writes DIR/bdrate.csv and an RD plot of every method's mean curve.
    """
    from spikecodec.evaluation import EvaluationError, write_bdrate

    try:
        report, csv_path, png_path = write_bdrate(results_dir, anchor, interpolation, plot_path)
    except (EvaluationError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(report.markdown())
    click.echo(f"\nwrote {csv_path} and {png_path}")


# --- end section: eval -----------------------------------------------------------------------

# --- section: train (owner: models) ----------------------------------------------------------

@main.command("train")
@click.option("--stage", type=click.Choice(["a", "b", "c1", "c2", "densities", "intra", "inter", "cnn"]), default=None,
              help="a: FEM + proxy head with the smoothness penalty; b: AFR + reconstruction head "
                   "on the frozen FEM; c1: the feature codec, rate-distortion loss, analysis frozen; "
                   "c2: codec decoder side + FMVR + AFR + head fine-tuned, FEM and encoder frozen; "
                   "densities: only the priors of a trained codec's hyper-latents refitted to their "
                   "bits (nothing decoded changes); "
                   "intra: a trained codec's I-frame coder fine-tuned on the image of the I frame "
                   "(analysis and P-frame coder frozen); "
                   "inter: a trained codec's P-frame coder fine-tuned with c1's loss (analysis and "
                   "I-frame coder frozen); "
                   "cnn: the plain-CNN baseline. [default: a, or the config's]")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file of training settings (fields of spikecodec.training.TrainConfig).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for checkpoints, the JSON-lines log and the final weights.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Total optimisation steps.")
@click.option("--fem-weights", default=None,
              help="Stage b: the stage-a output directory, its fem.safetensors, or a registry id.")
@click.option("--analysis-weights", default=None,
              help="Codec stages (c1, c2, densities, intra, inter): registry id of the stage-b reconstructor (e.g. sci-small-v1-recon).")
@click.option("--codec-weights", default=None,
              help="Stages c2/densities/intra/inter: a trained codec: a stage-c output directory, its "
                   "codec.safetensors, or a registry id.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Clips per step and rank.")
@click.option("--crop", type=click.IntRange(min=8), default=None, help="Training crop size in pixels.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate.")
@click.option("--smooth-weight", type=click.FloatRange(min=0), default=None,
              help="Stage a: weight of the Laplacian smoothness penalty on F (0 switches it off).")
@click.option("--image-loss", type=click.Choice(["mse", "log_mse"]), default=None,
              help="Stages a, b, cnn: 'log_mse' averages log(MSE) over samples, i.e. trains for the mean PSNR; "
                   "plain 'mse' (the default) lets fast-motion clips, whose errors are largest, dominate.")
@click.option("--init-weights", default=None,
              help="Stages b, cnn: start from trained weights (a .safetensors export or a registry id) to fine-tune.")
@click.option("--seed", type=int, default=None, help="Seed of weights and data.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads per process.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out, if there is one.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_command(stage, config_path, out_dir, steps, fem_weights, analysis_weights, codec_weights, batch_size,
                  crop, lr, smooth_weight, image_loss, init_weights, seed, threads, resume, no_progress):
    """Train one stage of the SCI models (paper V-B) on S-Motion clips made on the fly.

    \b
    spikecodec train --stage a --out runs/a --steps 3000
    spikecodec train --stage b --fem-weights runs/a --out runs/b --steps 3000
    spikecodec train --stage b --fem-weights sci-small-v2 --init-weights sci-small-v2-recon --image-loss log_mse --lr 3e-4 --out runs/ft
    spikecodec train --stage c1 --analysis-weights sci-small-v1-recon --out runs/c1
    spikecodec train --stage c2 --analysis-weights sci-small-v1-recon --codec-weights runs/c1 --out runs/c2
    spikecodec train --stage densities --analysis-weights sci-small-v1-recon --codec-weights runs/c1 --out runs/d
    spikecodec train --stage intra --analysis-weights sci-small-v1-recon --codec-weights runs/d --out runs/i
    spikecodec train --stage inter --analysis-weights sci-small-v1-recon --codec-weights runs/i --out runs/p
    torchrun --nproc_per_node 2 -m spikecodec.cli train --stage a --out runs/a
    """
    from spikecodec.models.registry import ModelNotFoundError, WeightsError
    from spikecodec.training import load_train_config, train

    overrides = {
        "stage": stage, "steps": steps, "fem_weights": fem_weights, "analysis_weights": analysis_weights,
        "codec_weights": codec_weights, "batch_size": batch_size,
        "crop": crop, "lr": lr, "smooth_weight": smooth_weight, "image_loss": image_loss, "init_weights": init_weights,
        "seed": seed, "threads": threads,
    }
    try:
        config = load_train_config(config_path, overrides)
        result = train(config, out_dir, resume=resume, progress=not no_progress)
    except (ValueError, OSError, ModelNotFoundError, WeightsError) as error:
        raise click.ClickException(str(error)) from None
    if result.last_validation:
        click.echo(f"stage {config.stage}: step {result.step}, validation PSNR "
                   f"{result.last_validation['psnr']:.2f} dB (TFP41 {result.last_validation['tfp41_psnr']:.2f} dB)")
    for name, digest in result.exported.items():
        click.echo(f"wrote {out_dir}/{name} sha256={digest}")


# --- end section: train ----------------------------------------------------------------------


if __name__ == "__main__":
    main()
