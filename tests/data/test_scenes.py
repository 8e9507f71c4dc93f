"""The built-in scenes generator: formats, determinism, and that its language is true (or, for foils, false).

Truth is checked by a small parser written here, independently of the generator's own
semantics: it reads noun phrases ("two blue squares"), relation words and a few fixed
constructions out of the text and evaluates them on the boxes in objects_{split}.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlp.data.scenes import HELD_OUT_COMBOS, generate_scenes, scenes_are_cached
from vlp.data.scenes.captions import TEMPLATES

SPLITS = ("train", "val", "test", "test_novel")
SMALL = dict(seed=3, image_size=64, num_train=40, num_val=10, num_test=20, num_test_novel=20)
MANY = dict(seed=5, image_size=32, num_train=300, num_val=0, num_test=20, num_test_novel=20)

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
COLOUR = {c: c for c in ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "gray", "cyan")}
COLOUR["grey"] = "gray"
SHAPE = {}
for _canon, _words in {
    "circle": ("circle", "disk"), "square": ("square",), "triangle": ("triangle",), "diamond": ("diamond", "rhombus"),
    "star": ("star",), "cross": ("cross", "plus sign"), "hexagon": ("hexagon",), "heart": ("heart",),
}.items():
    for _w in _words:
        SHAPE[_w] = SHAPE[_w + ("es" if _w.endswith(("s", "x")) else "s")] = _canon
GENERIC = {"object", "objects", "shape", "shapes"}
SIZE = {"small": "small", "little": "small", "large": "large", "big": "large"}
ROUNDING = 0.02  # boxes in the JSON are rounded to 0.01 px, so centres may move by that much
REL = {"left": "left", "right": "right", "above": "above", "over": "above"}
REL |= {"below": "below", "under": "below", "beneath": "below"}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("scenes_w2"), workers=2, **SMALL)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("scenes_many"), workers=1, **MANY)


def load(root: Path, name: str):
    return json.loads((root / name).read_text())


@dataclass
class Obj:
    shape: str
    colour: str
    size: str
    box: tuple[float, float, float, float]  # x, y, w, h

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2


def objects_by_image(root: Path, split: str) -> dict[int, list[Obj]]:
    out: dict[int, list[Obj]] = {im["id"]: [] for im in load(root, f"objects_{split}.json")["images"]}
    for a in load(root, f"objects_{split}.json")["annotations"]:
        at = a["attributes"]
        out[a["image_id"]].append(Obj(at["shape"], at["colour"], at["size"], tuple(a["bbox"])))
    return out


# ----------------------------------------------------------------------------- independent checker


def words(text: str) -> list[str]:
    toks = re.findall(r"[a-z]+", text.lower())
    out: list[str] = []
    for t in toks:
        if t in ("sign", "signs") and out and out[-1] == "plus":
            out[-1] = f"plus {t}"
        else:
            out.append(t)
    return out


@dataclass
class Phrase:
    count: int | None
    size: str | None
    colour: str | None
    shape: str | None
    start: int
    end: int

    def select(self, objs: list[Obj]) -> list[Obj]:
        return [
            o for o in objs
            if (self.size in (None, o.size)) and (self.colour in (None, o.colour)) and (self.shape in (None, o.shape))
        ]


def phrases(toks: list[str]) -> list[Phrase]:
    out, i = [], 0
    while i < len(toks):
        j, count, size, colour = i, None, None, None
        if toks[j] in NUMBERS:
            count, j = NUMBERS[toks[j]], j + 1
        if j < len(toks) and toks[j] in SIZE:
            size, j = SIZE[toks[j]], j + 1
        if j < len(toks) and toks[j] in COLOUR:
            colour, j = COLOUR[toks[j]], j + 1
        if j < len(toks) and (toks[j] in SHAPE or toks[j] in GENERIC):
            out.append(Phrase(count, size, colour, SHAPE.get(toks[j]), i, j))
            i = j + 1
        else:
            i += 1
    return out


def offset(rel: str, a: Obj, b: Obj) -> float:
    (ax, ay), (bx, by) = a.centre, b.centre
    return {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[rel]


def violations(text: str, objs: list[Obj], image_size: int, *, strict: bool) -> list[str]:
    """Facts in `text` that do not hold. strict: relations need a clear margin (for captions);
    otherwise a relation only counts as violated when no pair lies in its direction at all (for foils)."""
    toks, bad = words(text), []
    colours, shapes = {o.colour for o in objs}, {o.shape for o in objs}
    bad += [f"colour {t}" for t in toks if t in COLOUR and COLOUR[t] not in colours]
    bad += [f"shape {t}" for t in toks if t in SHAPE and SHAPE[t] not in shapes]
    found = phrases(toks)
    for p in found:
        n = len(p.select(objs))
        if p.count is not None and n != p.count:
            bad.append(f"count {toks[p.start:p.end + 1]} = {n}")
        elif p.count is None and (p.size or p.colour or p.shape) and n == 0:
            bad.append(f"missing {toks[p.start:p.end + 1]}")
    if "single" in toks and len(objs) != 1:
        bad.append("single")
    if m := re.match(r"(one|two|three|four) of the (objects|shapes) are (.+)$", text):
        rest = phrases(words(m.group(3)))
        attr = rest[0] if rest else Phrase(None, None, COLOUR.get(m.group(3)), None, 0, 0)
        if len(attr.select(objs)) != NUMBERS[m.group(1)]:
            bad.append("of-the count")
    if m := re.match(r"all (objects|shapes) are (\w+)$", text):
        if any(o.colour != COLOUR[m.group(2)] for o in objs):
            bad.append("all")
    rel_at = [i for i, t in enumerate(toks) if t in REL]
    if rel_at:
        r = rel_at[0]
        subj = [p for p in found if p.end < r][-1]
        obj = [p for p in found if p.start > r][0]
        a, b = subj.select(objs), obj.select(objs)
        pairs = [(x, y) for x in a for y in b if x is not y]
        if strict:
            ok = lambda x, y: offset(REL[toks[r]], x, y) >= 0.1 * image_size  # noqa: E731
            holds = any(all(ok(x, y) for x in a) for y in b) if subj.count else any(ok(x, y) for x, y in pairs)
        else:
            holds = any(offset(REL[toks[r]], x, y) > ROUNDING for x, y in pairs)
        if not holds:
            bad.append(f"relation {toks[r]}")
    return bad


# ----------------------------------------------------------------------------- tests


def test_vocabulary_and_templates() -> None:
    assert len(TEMPLATES) >= 12
    assert len(set(SHAPE.values())) >= 6 and len(COLOUR) >= 8
    held = set(HELD_OUT_COMBOS)
    seen = {(c, s) for c in set(COLOUR.values()) for s in set(SHAPE.values())} - held
    assert {c for c, _ in seen} == set(COLOUR.values()) and {s for _, s in seen} == set(SHAPE.values())
    assert 0.05 <= len(held) / (len(seen) + len(held)) <= 0.2


def test_deterministic_across_workers(small: Path, tmp_path: Path) -> None:
    other = generate_scenes(tmp_path / "w1", workers=1, **SMALL)
    names = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for name in names:
        if name.suffix == ".json":
            assert (small / name).read_bytes() == (other / name).read_bytes(), name
        else:
            assert np.array_equal(np.asarray(Image.open(small / name)), np.asarray(Image.open(other / name))), name


def test_deterministic_across_processes(small: Path, tmp_path: Path) -> None:
    """Another interpreter with another string-hash seed writes the same bytes (no set-order leaks)."""
    code = f"from vlp.data.scenes import generate_scenes; generate_scenes({str(tmp_path)!r}, workers=1, **{SMALL!r})"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    for name in ["dataset_coco.json", "foils_test.json", "vqa/questions_train.json", "vqa/annotations_test_novel.json"]:
        assert (small / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_seed_changes_output(small: Path, tmp_path: Path) -> None:
    params = {**SMALL, "seed": 4, "num_val": 0, "num_test": 0, "num_test_novel": 0}
    other = generate_scenes(tmp_path / "s", workers=1, **params)
    assert load(small, "objects_train.json") != load(other, "objects_train.json")


@pytest.mark.parametrize("size", [31, 225, 0])
def test_image_size_out_of_range(size: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_scenes(tmp_path, image_size=size, num_train=1, num_val=0, num_test=0, num_test_novel=0)
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("size", [32, 64, 224])
def test_images_are_rgb_of_the_requested_size(size: int, small: Path, many: Path, tmp_path: Path) -> None:
    root = {64: small, 32: many}.get(size) or generate_scenes(
        tmp_path, image_size=size, num_train=2, num_val=0, num_test=0, num_test_novel=0, workers=1
    )
    for entry in load(root, "dataset_coco.json")["images"][:20]:
        image = Image.open(root / entry["filepath"] / entry["filename"])
        assert image.mode == "RGB" and image.size == (size, size)
        assert np.asarray(image).std() > 5  # not blank: objects were drawn


@pytest.mark.parametrize("which", ["small", "many"])
def test_objects_separate_and_inside(which: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(which)
    size = load(root, "manifest.json")["params"]["image_size"]
    for split in SPLITS:
        for objs in objects_by_image(root, split).values():
            assert 1 <= len(objs) <= 4
            for o in objs:
                x, y, w, h = o.box
                assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
            for i, a in enumerate(objs):
                for b in objs[i + 1:]:
                    (ax, ay, aw, ah), (bx, by, bw, bh) = a.box, b.box
                    apart = ax + aw < bx or bx + bw < ax or ay + ah < by or by + bh < ay
                    assert apart, (a, b)


def test_attributes_vary(many: Path) -> None:
    objs = [o for v in objects_by_image(many, "train").values() for o in v]
    assert {o.shape for o in objs} == set(SHAPE.values())
    assert {o.colour for o in objs} == set(COLOUR.values())
    assert {o.size for o in objs} == {"small", "large"}
    smalls = [o.box[2] * o.box[3] for o in objs if o.size == "small" and o.shape == "square"]
    larges = [o.box[2] * o.box[3] for o in objs if o.size == "large" and o.shape == "square"]
    assert max(smalls) * 1.8 < min(larges)  # clearly different sizes


def test_karpathy_json(small: Path) -> None:
    data = load(small, "dataset_coco.json")
    assert data["dataset"] == "scenes"
    images = data["images"]
    assert Counter(im["split"] for im in images) == {"train": 40, "val": 10, "test": 20, "test_novel": 20}
    assert len({im["imgid"] for im in images}) == len(images)
    sentids = [s["sentid"] for im in images for s in im["sentences"]]
    assert len(set(sentids)) == len(sentids)
    for im in images:
        assert im["cocoid"] == im["imgid"] and im["filepath"] == f"images/{im['split']}"
        assert re.fullmatch(rf"{im['split']}_\d{{6}}\.png", im["filename"])
        assert (small / im["filepath"] / im["filename"]).is_file()
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        raws = [s["raw"] for s in im["sentences"]]
        assert len(raws) == 5 and len(set(raws)) == 5
        for s in im["sentences"]:
            assert s["imgid"] == im["imgid"]
            assert s["tokens"] == re.findall(r"[a-z0-9]+", s["raw"].lower()) and s["tokens"]


@pytest.mark.parametrize("which", ["small", "many"])
def test_captions_are_true(which: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(which)
    size = load(root, "manifest.json")["params"]["image_size"]
    objs = {k: v for split in SPLITS for k, v in objects_by_image(root, split).items()}
    for im in load(root, "dataset_coco.json")["images"]:
        for s in im["sentences"]:
            assert violations(s["raw"], objs[im["imgid"]], size, strict=True) == [], (s["raw"], objs[im["imgid"]])


def test_captions_cover_different_aspects(many: Path) -> None:
    images = load(many, "dataset_coco.json")["images"]
    raws = [s["raw"] for im in images for s in im["sentences"]]
    with_relation = sum(any(w in REL for w in words(r)) for r in raws)
    with_count = sum(any(w in NUMBERS for w in words(r)) for r in raws)
    with_colour = sum(any(w in COLOUR for w in words(r)) for r in raws)
    assert with_relation > 0.1 * len(raws) and with_count > 0.2 * len(raws) and with_colour > 0.6 * len(raws)
    assert len({r for r in raws}) > 0.5 * len(raws)


@pytest.mark.parametrize("which", ["small", "many"])
def test_foils_are_false(which: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(which)
    size = load(root, "manifest.json")["params"]["image_size"]
    images = {im["imgid"]: im for im in load(root, "dataset_coco.json")["images"]}
    kinds: Counter[str] = Counter()
    for split in ("test", "test_novel"):
        objs = objects_by_image(root, split)
        foils = load(root, f"foils_{split}.json")
        captions = {s["sentid"]: s["raw"] for im in images.values() if im["split"] == split for s in im["sentences"]}
        assert sorted(f["sentid"] for f in foils) == sorted(captions)  # one foil for every test caption
        for f in foils:
            assert f["caption"] == captions[f["sentid"]] and images[f["image_id"]]["split"] == split
            assert f["foil"] != f["caption"]
            assert violations(f["foil"], objs[f["image_id"]], size, strict=False), f
            kinds[f["kind"]] += 1
    assert set(kinds) <= {
        "relation_swap", "colour_swap", "shape_swap", "size_swap", "colour_change", "shape_change",
        "size_change", "count_change", "colour_absent", "shape_absent",
    }
    assert kinds["relation_swap"] > 0 and kinds["colour_swap"] + kinds["shape_swap"] > 0


def test_held_out_combos(many: Path) -> None:
    held = {(d["colour"], d["shape"]) for d in load(many, "manifest.json")["held_out_combos"]}
    assert held == set(HELD_OUT_COMBOS)
    for split in SPLITS:
        for objs in objects_by_image(many, split).values():
            combos = {(o.colour, o.shape) for o in objs}
            assert bool(combos & held) == (split == "test_novel"), (split, combos)
    images = load(many, "dataset_coco.json")["images"]
    texts = [s["raw"] for im in images if im["split"] != "test_novel" for s in im["sentences"]]
    texts += [q["question"] for split in SPLITS[:3] for q in load(many, f"vqa/questions_{split}.json")["questions"]]
    for text in texts:  # never even named outside test_novel
        assert not {(p.colour, p.shape) for p in phrases(words(text))} & held, text


def check_answer(question: str, answer: str, objs: list[Obj], size: int) -> None:
    toks = words(question)
    found = phrases(toks)
    rel_at = [i for i, t in enumerate(toks) if t in REL]
    if question.startswith("how many"):
        assert answer == str(len(found[0].select(objs)))
    elif rel_at and question.startswith("is the"):
        a, b = found[0].select(objs), found[-1].select(objs)
        assert len(a) == len(b) == 1
        d = offset(REL[toks[rel_at[0]]], a[0], b[0])
        assert (d >= 0.1 * size) if answer == "yes" else (d <= ROUNDING)
    elif rel_at:
        (anchor,) = found[-1].select(objs)
        hits = [o for o in objs if o is not anchor and offset(REL[toks[rel_at[0]]], o, anchor) > ROUNDING]
        assert len(hits) == 1 and answer in (hits[0].shape, hits[0].colour)
    elif question.startswith(("what color", "what shape")):
        (target,) = phrases(toks[2:])[0].select(objs)  # skip the noun in 'what shape is'
        assert answer == (target.colour if "color" in question else target.shape)
    else:
        assert answer == ("yes" if found[0].select(objs) else "no"), question


@pytest.mark.parametrize("which", ["small", "many"])
def test_vqa(which: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(which)
    size = load(root, "manifest.json")["params"]["image_size"]
    yes_no: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    qids: set[int] = set()
    for split in SPLITS:
        objs = objects_by_image(root, split)
        questions = load(root, f"vqa/questions_{split}.json")["questions"]
        anns = {a["question_id"]: a for a in load(root, f"vqa/annotations_{split}.json")["annotations"]}
        assert len(anns) == len(questions)
        per_image = Counter(q["image_id"] for q in questions)
        assert set(per_image) == set(objs) and min(per_image.values(), default=3) >= 3
        for q in questions:
            assert q["question_id"] not in qids
            qids.add(q["question_id"])
            a = anns[q["question_id"]]
            assert a["image_id"] == q["image_id"] and a["answer_type"] in ("yes/no", "number", "other")
            answers = [x["answer"] for x in a["answers"]]
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert all(x["answer_confidence"] == "yes" for x in a["answers"])
            assert a["multiple_choice_answer"] == Counter(answers).most_common(1)[0][0]
            check_answer(q["question"], a["multiple_choice_answer"], objs[q["image_id"]], size)
            kinds[a["question_type"]] += 1
            if a["answer_type"] == "yes/no":
                yes_no[a["multiple_choice_answer"]] += 1
    assert {"how many", "what color is the", "what shape is the", "is the"} <= set(kinds)
    if which == "many":
        assert sum(yes_no.values()) > 200
        assert 0.35 <= yes_no["yes"] / sum(yes_no.values()) <= 0.65


def test_answers_are_noisy(many: Path) -> None:
    anns = load(many, "vqa/annotations_train.json")["annotations"]
    agree = [sum(x["answer"] == a["multiple_choice_answer"] for x in a["answers"]) for a in anns]
    assert min(agree) >= 6 and 0.05 < np.mean([n < 10 for n in agree]) < 0.6
    all_answers = {x["answer"] for a in anns for x in a["answers"]}
    assert {"grey", "two"} & all_answers


def test_coco_detection_format(small: Path) -> None:
    karpathy = {im["imgid"]: im for im in load(small, "dataset_coco.json")["images"]}
    ann_ids = set()
    for split in SPLITS:
        coco = load(small, f"objects_{split}.json")
        assert {c["name"] for c in coco["categories"]} == set(SHAPE.values())
        assert all(c["supercategory"] == "shape" for c in coco["categories"])
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for im in coco["images"]:
            assert karpathy[im["id"]]["filename"] == im["file_name"] and karpathy[im["id"]]["split"] == split
            assert im["width"] == im["height"] == 64
        for a in coco["annotations"]:
            assert set(a) == {"id", "image_id", "bbox", "area", "category_id", "iscrowd", "attributes"}
            assert a["id"] not in ann_ids and a["iscrowd"] == 0 and len(a["bbox"]) == 4
            ann_ids.add(a["id"])
            assert 0 < a["area"] <= a["bbox"][2] * a["bbox"][3] * 1.01  # both are rounded
            assert names[a["category_id"]] == a["attributes"]["shape"]
            assert set(a["attributes"]) == {"shape", "colour", "size"}


def test_cache(small: Path, tmp_path: Path) -> None:
    assert scenes_are_cached(small, **SMALL)
    assert scenes_are_cached(small, workers=7, progress=print, **SMALL)  # same kwargs as generate_scenes
    assert not scenes_are_cached(small, **{**SMALL, "seed": 4})
    assert not scenes_are_cached(small, **{**SMALL, "num_train": 41})
    assert not scenes_are_cached(small, **{**SMALL, "image_size": 32})
    assert not scenes_are_cached(tmp_path / "nothing", **SMALL)
    manifest = load(small, "manifest.json")
    assert manifest["params"] == SMALL and manifest["counts"]["test"]["foils"] == 100
    lines: list[str] = []
    params = dict(SMALL, num_val=0, num_test=0, num_test_novel=0)
    out = generate_scenes(tmp_path / "g", workers=1, progress=lines.append, **params)
    assert lines and scenes_are_cached(out, **params)
    (out / "manifest.json").unlink()
    assert not scenes_are_cached(out, **params)


def test_captions_discriminate_between_images(many: Path) -> None:
    """Read against the next image, most captions are false: they carry enough detail for
    retrieval, and the checker above is not vacuous."""
    images = [im for im in load(many, "dataset_coco.json")["images"] if im["split"] == "train"]
    objs = objects_by_image(many, "train")
    results = [
        bool(violations(s["raw"], objs[other["imgid"]], 32, strict=True))
        for im, other in zip(images, images[1:])
        for s in im["sentences"]
    ]
    assert np.mean(results) > 0.8
