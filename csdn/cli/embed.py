"""``csdn embed``: images (files and folders) in, an embeddings file out (see
:mod:`csdn.retrieval.embeddings`); also the image listing and embedding ``csdn match`` reuses."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from csdn.errors import describe_skipped
from csdn.images.decode import SENSOR_BIT_DEPTHS
from csdn.images.embedding import TORCH_PRECISIONS
from csdn.images.files import expand_folders
from csdn.retrieval.checks import STORAGE_DTYPE_NAMES

if TYPE_CHECKING:
    from csdn.retrieval.embeddings import Embeddings

MODEL_HELP = (
    "registry name, hf-hub:org/repo, a local folder / .safetensors file, a csdn train run folder "
    "(its model/), or one of its checkpoints/*.pt"
)


def chosen_device(requested: str) -> str:
    """``--device`` resolved (``auto``: CUDA when available, else the CPU)."""
    from csdn.system.device import resolve_device

    return str(resolve_device(requested))


def say_device(requested: str) -> None:
    """Say once on stderr (rank 0 under torchrun) which device ``--device`` chose; said when the work is
    done, so that an error stays the one line ``csdn: error: ...``."""
    from csdn.system.device import device_note, resolve_device

    if os.environ.get("RANK", "0") == "0":
        print(f"csdn: {device_note(requested, resolve_device(requested))}", file=sys.stderr)


def load_model(args: argparse.Namespace):
    """The model ``--model`` names (see :mod:`csdn.train.runmodel`), on ``--device``."""
    from csdn.train.runmodel import load_model as load_named

    return load_named(args.model, device=chosen_device(args.device), progress=not args.quiet)


def embed_files(model: Any, inputs: Sequence[str], modality: str, args: argparse.Namespace) -> Embeddings:
    """Embed the images of ``inputs`` with the options of :func:`add_embedding_options`.

    With ``--skip-bad-images`` unreadable images are left out, each listed on stderr, and the
    manifest names only the images that were embedded.
    """
    from csdn.inference.embed import embed_with_report
    from csdn.modality import normalize_modality
    from csdn.retrieval.embeddings import Embeddings

    modality = normalize_modality(modality)
    paths = [str(p) for p in expand_folders(inputs)]
    report = embed_with_report(
        model,
        paths,
        modality,
        batch_size=args.batch_size,
        flip=not args.no_flip,
        precision=args.precision,
        progress=not args.quiet,
        bit_depth=args.bit_depth,
        on_error="skip" if args.skip_bad_images else "raise",
    )
    if report.skipped:
        print(
            f"csdn: skipped {len(report.skipped)} of {len(paths)} {modality} images that could not be read:\n"
            f"{describe_skipped(report.skipped)}",
            file=sys.stderr,
        )
    return Embeddings(
        report.embeddings,
        [paths[i] for i in report.kept],
        model=args.model,
        modality=modality,
        flip=not args.no_flip,
        precision=args.precision,
    )


def run_embed(args: argparse.Namespace) -> int:
    from csdn.cli.sharded import embed_on_ranks, torchrun_world
    from csdn.retrieval.embeddings import check_embeddings_path, manifest_path, save_embeddings
    from csdn.system.fileio import refuse_existing

    output = check_embeddings_path(args.output)
    if not args.overwrite:  # before any work: an hour of embedding must not end in this error
        refuse_existing([output, manifest_path(output)])

    device = chosen_device(args.device)  # resolved: "auto" on GPUs joins the torchrun world over NCCL
    with torchrun_world(device) as world:  # under torchrun: each rank embeds a share, rank 0 writes
        model = load_model(args)
        embeddings = embed_on_ranks(lambda images: embed_files(model, images, args.modality, args), args.images, world)
    if embeddings is None:
        return 0
    save_embeddings(output, embeddings, overwrite=args.overwrite, dtype=args.dtype)
    say_device(args.device)
    print(f"wrote {output} ({embeddings.count} x {embeddings.dim}) and {manifest_path(output)}")
    return 0


def add_embedding_options(parser: argparse.ArgumentParser) -> None:
    """The options of commands that embed images: batch size, flip, precision, device, bit depth, progress."""
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation (half-size embeddings)")
    parser.add_argument(
        "--precision", choices=TORCH_PRECISIONS, default="fp32", help="compute precision (default fp32)"
    )
    add_device_option(parser)
    parser.add_argument(
        "--bit-depth",
        type=int,
        choices=SENSOR_BIT_DEPTHS,
        default=None,
        metavar="BITS",
        help="bits per pixel of the camera that made 16-bit frames (thermal PNG/TIFF): "
        f"{', '.join(map(str, SENSOR_BIT_DEPTHS))}; scales every frame the same way "
        "(default: guessed per frame from its largest value)",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out images that cannot be read, listing each on stderr (default: stop at the first)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``, whose default ``auto`` is the same in every command: CUDA when available, else the CPU."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else cpu; the default), cpu, cuda, cuda:1 ..."
    )


def add_overwrite_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: without it, a command refuses to replace any output that already exists."""
    parser.add_argument("--overwrite", action="store_true", help=f"{what} (default: refuse)")


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``embed`` to an ``argparse`` sub-command collection."""
    embed = commands.add_parser("embed", help="embed images into an embeddings file (+ a NAME.ext.json manifest)")
    embed.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    embed.add_argument("--model", required=True, help=MODEL_HELP)
    embed.add_argument("--modality", required=True, help="visible (rgb, vis) or infrared (ir, thermal, nir)")
    embed.add_argument(
        "--output",
        required=True,
        help="embeddings file: NAME.safetensors or NAME.npy (its manifest: NAME.safetensors.json / NAME.npy.json)",
    )
    add_overwrite_option(embed, "replace an existing --output file and its manifest")
    embed.add_argument(
        "--dtype",
        choices=STORAGE_DTYPE_NAMES,
        default="float32",
        help="how the rows are stored: float16/bfloat16 halve the file; csdn match still ranks "
        "them exactly (default float32)",
    )
    add_embedding_options(embed)
    embed.set_defaults(func=run_embed)
    return [embed]
