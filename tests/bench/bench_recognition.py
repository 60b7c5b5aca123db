"""Benchmark: the doorbell's face pipeline against the naive face_recognition recipe.

Run from the repository root:  python tests/bench/bench_recognition.py [--repeat 3]
Prints one JSON document: accuracy per photo category for each pipeline, median and p90
time per photo, and the ratios naive / ours. Not collected by pytest (no test_ prefix).

Both pipelines get the same decoded RGB arrays, in one process, in alternating order (naive
first on even photos, ours first on odd ones) so drifting CPU clocks or caches favour
neither; nothing is cached across photos. Each enrolls from the manifest's `enroll: true`
photos with its own method, then names every other photo; tolerance 0.6 for both.

Naive = face_recognition.face_locations(image) (HOG, upsampled once, full resolution), then
face_recognition.face_encodings(image, locations), nearest enrolled face within 0.6.
Ours = services.doorbell.recognition.recognize_burst([image], known).

Besides the end-to-end ratios it prints the ratios of each stage (detection; encoding,
where both run the same ResNet from the same model file, the naive recipe in dlib's own
forward pass, ours on numpy's BLAS: services/doorbell/face_net.py) and the ceiling: naive
time over our encoding time alone, i.e. the ratio a detector taking no time at all would
reach. Encoding is counted in the encoding thread's CPU time for both (the doorbell
overlaps a detection pass with it in another thread, whose share of a busy core wall time
would book as encoding); totals are wall time.

Photos are found through EDGE_TEST_DATA (default: ../shared/data next to the repository).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hardware.camera import load_rgb  # noqa: E402
from services.doorbell import enrollment, face_library, recognition  # noqa: E402
from services.doorbell.testing import PHOTO_CATEGORIES, is_correct, photo_category  # noqa: E402
from measures import bench_parser  # noqa: E402

TOLERANCE = 0.6
CATEGORIES = PHOTO_CATEGORIES
TARGET = {"median_ratio": 4.0, "p90_ratio": 5.0}


class NaivePipeline:
    """The face_recognition README recipe."""

    def __init__(self):
        self.fr = face_library.load_face_library("face_recognition")  # the real library, not ours
        self.known_names: list[str] = []
        self.known: list[np.ndarray] = []

    def enroll(self, name: str, image: np.ndarray) -> None:
        encodings = self.fr.face_encodings(image, self.fr.face_locations(image))
        self.known_names.append(name)
        self.known.append(encodings[0])

    def identify(self, image: np.ndarray) -> tuple[int, list[str], dict[str, float]]:
        t0 = time.perf_counter()
        locations = self.fr.face_locations(image)
        t1 = time.perf_counter()
        cpu = time.thread_time()  # encoding in CPU time, as the doorbell's own timing counts it
        encodings = self.fr.face_encodings(image, locations)
        encode_s = time.thread_time() - cpu
        names = []
        for encoding in encodings:
            distances = self.fr.face_distance(self.known, encoding)
            best = int(np.argmin(distances))
            if distances[best] <= TOLERANCE:
                names.append(self.known_names[best])
        return len(locations), names, {"detect": (t1 - t0) * 1000, "encode": encode_s * 1000}


class DoorbellPipeline:
    """services.doorbell.recognition, as the doorbell uses it."""

    def __init__(self, model: str = recognition.DEFAULT_MODEL):
        self.model = model
        self.known: dict[str, list[np.ndarray]] = {}

    def enroll(self, name: str, image: np.ndarray) -> None:
        self.known.setdefault(name, []).extend(
            enrollment.enroll_single_face(image, label=name, model=self.model))

    def identify(self, image: np.ndarray) -> tuple[int, list[str], dict[str, float]]:
        result = recognition.recognize_burst([image], self.known, tolerance=TOLERANCE, model=self.model)
        return len(result.faces), result.names, result.timing_ms


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def summarize(per_photo: list[dict], key: str) -> dict:
    times = [p[key]["ms"] for p in per_photo]
    accuracy = {}
    for cat in CATEGORIES:
        rows = [p for p in per_photo if p["category"] == cat]
        if rows:
            right = sum(p[key]["correct"] for p in rows)
            accuracy[cat] = {"correct": right, "total": len(rows), "accuracy": round(right / len(rows), 3)}
    return {
        "accuracy": accuracy,
        "median_ms": round(statistics.median(times), 1),
        "p90_ms": round(percentile(times, 90), 1),
        "median_detect_ms": round(statistics.median(p[key]["detect_ms"] for p in per_photo), 1),
        "median_encode_ms": round(statistics.median(p[key]["encode_ms"] for p in per_photo), 1),
    }


def enroll(entries: list[dict], images: dict[str, np.ndarray], pipelines: dict) -> None:
    """Enroll every `enroll: true` photo. Also the warm-up: the first dlib calls pay for
    loading the models, which stays out of the timings."""
    for entry in entries:
        if entry.get("enroll"):
            for pipeline in pipelines.values():
                pipeline.enroll(entry["identity"], images[entry["file"]])


def run(entries: list[dict], images: dict[str, np.ndarray], pipelines: dict, repeat: int) -> list[dict]:
    per_photo = []
    probes = [e for e in entries if not e.get("enroll")]
    for index, entry in enumerate(probes):
        order = list(pipelines) if index % 2 == 0 else list(reversed(pipelines))
        row: dict = {"file": entry["file"], "category": photo_category(entry)}
        runs: dict[str, list] = {key: [] for key in pipelines}
        for _ in range(repeat):
            for key in order:
                started = time.perf_counter()
                faces, names, parts = pipelines[key].identify(images[entry["file"]])
                runs[key].append(((time.perf_counter() - started) * 1000, faces, names, parts))
        for key, samples in runs.items():
            ms = statistics.median(s[0] for s in samples)
            _, faces, names, parts = samples[0]
            row[key] = {"ms": round(ms, 1), "faces": faces, "names": names,
                        "correct": is_correct(entry, faces, names),
                        "detect_ms": round(statistics.median(s[3]["detect"] for s in samples), 1),
                        "encode_ms": round(statistics.median(s[3]["encode"] for s in samples), 1)}
        per_photo.append(row)
    return per_photo


def compare_models(entries: list[dict], images: dict[str, np.ndarray]) -> dict:
    """Accuracy and distance margins of our pipeline with 5-point ("small") and 68-point
    ("large") landmarks: the landmark model decides how the face chip is aligned."""
    out = {}
    for model in ("small", "large"):
        pipeline = DoorbellPipeline(model)
        enroll(entries, images, {"pipeline": pipeline})
        per_photo = run(entries, images, {"pipeline": pipeline}, repeat=1)
        summary = summarize(per_photo, "pipeline")
        genuine, impostor = [], []
        for entry in entries:
            if entry.get("enroll") or entry["identity"] in ("none", "multiple"):
                continue
            image = images[entry["file"]]
            boxes = recognition.detect_faces(image, max_faces=1)
            if not boxes:
                continue
            encoding = recognition.encode_faces(image, boxes, model=model)[0]
            for name, encs in pipeline.known.items():
                distance = float(np.linalg.norm(encs[0] - encoding))
                (genuine if name == entry["identity"] else impostor).append(distance)
        out[model] = {"accuracy": summary["accuracy"],
                      "genuine_distance_max": round(max(genuine), 3),
                      "genuine_distance_mean": round(statistics.mean(genuine), 3),
                      "impostor_distance_min": round(min(impostor), 3)}
    return out


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--repeat", type=int, default=3,
                        help="time each photo this many times per pipeline and keep the median")
    parser.add_argument("--compare-models", action="store_true",
                        help="also compare 5-point and 68-point landmark models")
    args = parser.parse_args()

    data = Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared" / "data")) / "faces"
    manifest = data / "manifest.json"
    if not manifest.is_file():
        print(f"face photos not found at {data}; set EDGE_TEST_DATA", file=sys.stderr)
        return 2
    entries = json.loads(manifest.read_text())["images"]
    images = {e["file"]: load_rgb(data / e["file"]) for e in entries}

    pipelines = {"naive": NaivePipeline(), "pipeline": DoorbellPipeline()}
    enroll(entries, images, pipelines)
    per_photo = run(entries, images, pipelines, args.repeat)
    naive, ours = summarize(per_photo, "naive"), summarize(per_photo, "pipeline")
    ratios = {"median": round(naive["median_ms"] / ours["median_ms"], 2),
              "p90": round(naive["p90_ms"] / ours["p90_ms"], 2),
              "detect_median": round(naive["median_detect_ms"] / ours["median_detect_ms"], 2),
              "encode_median": round(naive["median_encode_ms"] / ours["median_encode_ms"], 2)}
    # Were our detection free, a photo would still cost its encoding time: these ratios
    # are the ceiling any detector can reach with our encoder.
    encode_only = [p["pipeline"]["encode_ms"] for p in per_photo]
    ceiling = {"median": round(naive["median_ms"] / statistics.median(encode_only), 2),
               "p90": round(naive["p90_ms"] / percentile(encode_only, 90), 2)}
    accuracy_not_lower = all(ours["accuracy"][c]["correct"] >= naive["accuracy"][c]["correct"]
                             for c in naive["accuracy"])
    report = {
        "photos": len(per_photo),
        "repeat": args.repeat,
        "tolerance": TOLERANCE,
        "naive": naive,
        "pipeline": ours,
        "ratios": ratios,
        "ceiling_if_detection_were_free": ceiling,
        "target": TARGET,
        "target_met": {"median": ratios["median"] >= TARGET["median_ratio"],
                       "p90": ratios["p90"] >= TARGET["p90_ratio"],
                       "accuracy_not_lower": accuracy_not_lower},
        "per_photo": per_photo,
    }
    if args.compare_models:
        report["models"] = compare_models(entries, images)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
