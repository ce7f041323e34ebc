"""`argus profile quality`: measured image quality by level K and neighbour similarity, on a real backend.

For a prompt set, every prompt is generated exactly (K=0) by one real worker
process (the same driver as `argus profile latency`). Each prompt's nearest
other prompts in the set, by the engine's embedder, are its neighbours: the
prompt is generated again at every level K, resumed from each neighbour's
latent after K steps. Every image is scored with CLIPScore against its own
prompt,

    CLIPScore = 100 * max(cos(image embedding, text embedding), 0)

(Hessel et al. 2021, scaled to 100 as torchmetrics does), from a CLIP model in a
local directory, and its quality is relative to the same prompt's exact image:

    quality = 100 * CLIPScore(level K image) / CLIPScore(K=0 image)

A prompt whose exact image scores 0 has no relative quality; it is left out and
counted. The output is JSONL, one image a line, {"similarity", "level",
"quality", "prompt", "neighbour_prompt", "embedder", "embedder_identity", "steps", "model"} (level-0 lines have
similarity null and quality 100, and no embedder), as `read_quality_samples` reads it: input to `argus
train-predictor` and `DegradationMatrix.load_profiled`. Quality is not clipped:
a resumed image may score above the exact one. Beside the samples, a file of
the same name with the extension .provenance.json says how they were made.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.profile_latency import (
    WorkerProcess,
    add_worker_arguments,
    cache_levels,
    image_size,
    machine_description,
    now_utc,
)
from controller.versioned import write_versioned
from engine.cache.embedder_flags import check_embedder_model
from engine.cache.embedders import EMBEDDERS
from engine.commands.arg_types import (
    UsageError,
    batch_size,
    comma_separated,
    none_empty,
    not_an_input,
    output_file,
    positive_int,
    read_user_file,
)
from engine.commands.worker import check_worker_backend
from engine.logs.plurals import counted
from engine.system.whole_files import is_stream, output_of_this_process, written_or_exit, written_whole
from protocols.limits import MAX_BATCH
from workers.model_folder import clip_model_problem
from workers.model_loading import load_pretrained, loading

# the file beside the samples that says how they were made (JSONL has no room for it)
SAMPLES_KIND = "quality_samples_provenance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", help="prompt set: .txt (one a line), .json (a list) or .tsv (a Prompt column)")
    # the sim backend's quality is modelled (QualityModel), not measured: it is not offered
    add_worker_arguments(parser, simulated=False)
    parser.add_argument(
        "--clip", required=True, metavar="DIR", help="local CLIP model directory (CLIPModel + processor)"
    )
    parser.add_argument(
        "--levels",
        # K=0 is each prompt's exact image, made anyway: `--levels 0` generated every prompt and resumed none
        type=comma_separated(positive_int),
        help="levels K > 0, comma separated (default: every level the worker caches below N)",
    )
    parser.add_argument("--embedder", default="hash", choices=EMBEDDERS, help="the engine's embedder")
    parser.add_argument(
        "--embedder-model", metavar="DIR", help="minilm or clip embedder weights (clip: default --clip's text half)"
    )
    parser.add_argument("--neighbours", type=int, default=2, help="nearest other prompts per prompt (default 2)")
    parser.add_argument("--limit", type=positive_int, help="profile only the first N prompts of the set")
    # the worker's --max-batch: one it refuses ended the profile in a traceback of its usage
    parser.add_argument(
        "--batch", type=batch_size, default=4, help=f"images per batch sent to the worker, 1 to {MAX_BATCH} (default 4)"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=output_file,
        help="the file to write the samples to (JSONL; their provenance beside it, FILE.provenance.json)",
    )


@dataclass(frozen=True)
class Resume:
    """One image to make: `target` resumed at `level` from `neighbour`'s latent."""

    target: int
    neighbour: int
    level: int
    similarity: float


def run(args: argparse.Namespace) -> int:
    from loadgen.bench.subprocesses import unwind_on_sigterm
    from loadgen.prompts import load_prompts

    unwind_on_sigterm()  # as `argus profile latency`: its temporary folder removed, its worker stopped
    # "" read as ".": 'prompts come as .txt ...'; a --model "" as none, the tiny backend profiled
    none_empty(args, "prompts", "--clip", "--embedder-model", "--model")
    not_an_input(args.out, args.prompts)
    if output_of_this_process(args.out) is not None:
        # the samples came after the progress and the summary printed there (a file no reader takes), and their
        # provenance, "beside" them, went to /dev/stdout.provenance.json: made in /dev, or refused after the run
        raise UsageError(
            f"--out {args.out} is where this command prints its progress and summary: give a file (the samples'"
            " provenance is written beside it)"
        )
    if is_stream(args.out):
        # a stream has no file beside it: the provenance went to /dev/null.provenance.json, made in /dev as root,
        # and refused to others after the whole run
        raise UsageError(
            f"--out {args.out} is not a file (a device or a pipe): the samples' provenance is written beside them, in"
            " FILE.provenance.json; give a file"
        )
    prompts = read_user_file(load_prompts, args.prompts)[: args.limit]
    if len(prompts) < 2:
        raise UsageError("need at least 2 prompts: each one's neighbours are the others")
    if not 1 <= args.neighbours < len(prompts):
        raise UsageError(f"--neighbours must lie in 1..{len(prompts) - 1}")
    # before the embedder, CLIP and the worker load, each for seconds
    if problem := clip_model_problem(args.clip):
        raise UsageError(f"--clip: {problem}")
    check_embedder_model(args.embedder, _embedder_model(args), "--embedder", "--embedder-model")
    check_worker_backend(args.backend, args.model, args.device, args.time_scale, args.threads)
    similarity, embedder_identity = _similarities(args, prompts)
    scorer = ClipScorer(args.clip, args.device or "cpu")
    with tempfile.TemporaryDirectory(prefix="argus-profile-quality-") as tmp:
        with WorkerProcess(args, args.batch, Path(tmp)) as worker:
            hello = worker.handshake()
            levels = cache_levels(args.levels, hello, args.steps)
            size = image_size(args, hello)
            described = f"measured from {now_utc()} by `{shlex.join(sys.argv)}`; {machine_description(hello, args)}"
            generate = _Generator(worker, scorer, args, size)
            print(
                f"{counted(len(prompts), 'prompt')} at K=0 ({hello.backend}, {size}x{size}, N={args.steps}) ...",
                flush=True,
            )
            exact, latents = generate.exact(prompts)
            resumes = [
                Resume(i, int(j), level, float(similarity[i, j]))
                for i in range(len(prompts))
                for j in np.argsort(-similarity[i], kind="stable")[: args.neighbours]
                for level in levels
            ]
            print(f"{counted(len(resumes), 'resumed image')} at levels {levels} ...", flush=True)
            resumed = generate.resumed(prompts, resumes, latents)
    made_by = {"steps": args.steps, "model": hello.model}
    # whose similarities: a predictor or quality profile made from them is refused with another embedder (model)
    similarities_of = {"embedder": args.embedder, "embedder_identity": embedder_identity}
    rows, unscored = _rows(prompts, exact, resumes, resumed, similarities_of, made_by)
    _print_summary(rows, levels, unscored)  # first: the hours' figures stand though their file cannot be written
    _write(args, rows, levels, made_by, [described, *_method(args, len(prompts), size, levels, unscored)])
    return 0


def _method(args: argparse.Namespace, prompts: int, size: int, levels: list[int], unscored: int) -> list[str]:
    notes = [
        f"{size}x{size}, N={args.steps}, guidance {args.guidance}, seed {args.seed} for every image",
        f"{counted(prompts, 'prompt')} of {Path(args.prompts).name}, each resumed from its {args.neighbours} nearest"
        f" others by the {args.embedder} embedder at levels {levels}",
        f"quality = 100 * CLIPScore(level K image) / CLIPScore(K=0 image of the same prompt), CLIP from {args.clip}",
    ]
    if unscored:
        notes.append(f"{counted(unscored, 'prompt')} left out: their exact image scored 0")
    return notes


def _write(args: argparse.Namespace, rows: list[dict], levels: list[int], made_by: dict, notes: list[str]) -> None:
    def write_samples() -> None:
        with written_whole(args.out) as f:  # a run of hours: its last samples stay until the new ones are all written
            for row in rows:
                f.write(json.dumps(row) + "\n")

    written_or_exit("argus profile quality", "samples", args.out, write_samples)
    provenance_path = Path(args.out).with_suffix(".provenance.json")
    payload = {
        "samples": Path(args.out).name,
        "images": len(rows),
        "levels": levels,
        "embedder": args.embedder,
        **made_by,
    }
    provenance = "; ".join(notes) + "."
    written_or_exit(
        "argus profile quality",
        "samples' provenance",
        provenance_path,
        lambda: write_versioned(provenance_path, SAMPLES_KIND, provenance, payload),
    )
    print(f"{counted(len(rows), 'sample')} written to {args.out}, how they were made to {provenance_path}")


class _Generator:
    """Sends batches to the worker and scores what comes back, keeping only scores (and the K=0 latents)."""

    def __init__(self, worker: WorkerProcess, scorer: ClipScorer, args: argparse.Namespace, size: int):
        self._worker, self._scorer, self._args, self._size = worker, scorer, args, size

    def exact(self, prompts: Sequence[str]) -> tuple[list[float], list[dict[int, np.ndarray]]]:
        from protocols.worker_messages import GenerateItem

        scores: list[float] = []
        latents: list[dict[int, np.ndarray]] = []
        for start in range(0, len(prompts), self._args.batch):
            chunk = range(start, min(start + self._args.batch, len(prompts)))
            items = [GenerateItem(f"exact-{i}", prompts[i], self._args.seed) for i in chunk]
            done = self._run(0, items)
            scores += self._scorer.score([bytes(d.image) for d in done], [prompts[i] for i in chunk])
            latents += [{k: np.array(v) for k, v in d.by_level().items()} for d in done]
        return scores, latents

    def resumed(
        self, prompts: Sequence[str], resumes: Sequence[Resume], latents: Sequence[dict[int, np.ndarray]]
    ) -> list[float]:
        from protocols.worker_messages import GenerateItem

        scores: dict[int, float] = {}
        for level in sorted({r.level for r in resumes}):
            # a batch shares its level: group by it, keeping each image's place in `resumes`
            at_level = [n for n, r in enumerate(resumes) if r.level == level]
            for start in range(0, len(at_level), self._args.batch):
                chunk = at_level[start : start + self._args.batch]
                items = [
                    GenerateItem(
                        f"resume-{n}",
                        prompts[resumes[n].target],
                        self._args.seed,
                        latents[resumes[n].neighbour][level],
                        resumes[n].similarity,
                    )
                    for n in chunk
                ]
                done = self._run(level, items)
                texts = [prompts[resumes[n].target] for n in chunk]
                scores.update(zip(chunk, self._scorer.score([bytes(d.image) for d in done], texts), strict=True))
        return [scores[n] for n in range(len(resumes))]

    def _run(self, level: int, items: list) -> list:
        args = self._args
        return self._worker.generate(level, args.steps, self._size, args.guidance, items)[1]


class ClipScorer:
    """CLIPScore of images against their prompts with a local CLIP model (transformers CLIPModel + CLIPProcessor)."""

    def __init__(self, model_dir: str, device: str):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self._torch = torch
        self._device = device
        with loading(model_dir, "a CLIP model"):
            self._processor = CLIPProcessor.from_pretrained(model_dir, local_files_only=True)
            self._model = load_pretrained(CLIPModel, model_dir).to(device).eval()

    def score(self, images: Sequence[bytes], prompts: Sequence[str]) -> list[float]:
        from PIL import Image

        pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
        inputs = self._processor(
            text=list(prompts), images=pictures, return_tensors="pt", padding=True, truncation=True
        ).to(self._device)
        with self._torch.inference_mode():
            out = self._model(**inputs)
        # CLIPModel returns both embeddings of unit length: the row-wise dot product is the cosine
        cosine = (out.image_embeds * out.text_embeds).sum(dim=-1)
        return [100.0 * max(float(c), 0.0) for c in cosine]


def _similarities(args: argparse.Namespace, prompts: list[str]) -> tuple[np.ndarray, str]:
    """Cosine similarity of every pair by the engine's embedder (a prompt is never its own neighbour), and the
    embedder's identity (its model's)."""
    from engine.cache.embedders import make_embedder

    embedder = make_embedder(args.embedder, _embedder_model(args))
    vectors = embedder.embed(prompts)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity, embedder.identity


def _embedder_model(args: argparse.Namespace) -> str | None:
    """--embedder-model, or for the clip embedder, --clip's text half."""
    return args.embedder_model or (args.clip if args.embedder == "clip" else None)


def _rows(
    prompts: list[str],
    exact: list[float],
    resumes: list[Resume],
    resumed: list[float],
    similarities_of: dict,
    made_by: dict,
) -> tuple[list[dict], int]:
    """`similarities_of`: the embedder and its model, on every line with a similarity. `made_by`: the steps and the
    model every image was made with, on every line (a level is a share of the steps, and a quality a model's): the
    engine refuses samples of other steps and warns of another model's."""
    rows = [
        {"similarity": None, "level": 0, "quality": 100.0, "prompt": prompts[i], **made_by}
        for i, score in enumerate(exact)
        if score > 0
    ]
    for resume, score in zip(resumes, resumed, strict=True):
        if exact[resume.target] > 0:
            rows.append(
                {
                    "similarity": round(resume.similarity, 6),
                    "level": resume.level,
                    "quality": round(100.0 * score / exact[resume.target], 4),
                    "prompt": prompts[resume.target],
                    "neighbour_prompt": prompts[resume.neighbour],
                    **similarities_of,
                    **made_by,
                }
            )
    return rows, sum(score <= 0 for score in exact)


def _print_summary(rows: list[dict], levels: list[int], unscored: int) -> None:
    from loadgen.bench.output import table

    lines = []
    for level in levels:
        at = [r for r in rows if r["level"] == level]
        if at:
            quality = [r["quality"] for r in at]
            share = sum(q >= 95.0 for q in quality) / len(quality)
            lines.append(
                [level, len(at), float(np.mean([r["similarity"] for r in at])), float(np.mean(quality)), share]
            )
    print(table(["K", "images", "mean similarity", "mean quality %", "share >= 95"], lines))
    if unscored:
        print(
            f"{counted(unscored, 'prompt')} left out: their exact image scored 0 (CLIP cosine <= 0), no relative"
            " quality"
        )


if __name__ == "__main__":  # the same as `argus profile quality ...`
    from engine.cli import main

    sys.exit(main(["profile", "quality", *sys.argv[1:]]))
