"""Vendor a compact, derived copy of the SNIPS NLU benchmark into the package.

The traffic simulator (``feedback.simulate``) needs realistic voice-assistant wordings and slot
values, but the project must not read ``../shared`` at run time (a fresh clone has no such folder).
This script reads the raw corpus once and writes ``src/feedback/resources/snips/``:

* ``templates.json.gz``: per intent, the most frequent utterance templates (``"play {artist} on
  {service}"``) with their corpus counts, and per (intent, slot) the most frequent slot values;
* ``NOTICE.md``: attribution and the CC0 1.0 licence text.

Selection is deterministic (count descending, then text ascending) and the gzip header carries no
timestamp, so re-running the script on the same corpus gives byte-identical files.

Usage::

    .venv/bin/python scripts/vendor_snips.py [--src /work/shared/data/snips] [--dst src/feedback/resources/snips]
"""

from __future__ import annotations

import argparse
import codecs
import gzip
import hashlib
import io
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

MAX_TEMPLATES_PER_INTENT = 300
MAX_VALUES_PER_SLOT = 300
MAX_TEMPLATE_CHARS = 160
MAX_VALUE_CHARS = 60
INTENTS = (
    "AddToPlaylist",
    "BookRestaurant",
    "GetWeather",
    "PlayMusic",
    "RateBook",
    "SearchCreativeWork",
    "SearchScreeningEvent",
)
SOURCE = "sonos/nlu-benchmark, folder 2017-06-custom-intent-engines"
CITATION = (
    'Coucke A. et al., "Snips Voice Platform: an embedded Spoken Language Understanding system '
    'for private-by-design voice interfaces", 2018, arXiv:1805.10190'
)
_SLOT_RE = re.compile(r"\{([A-Za-z_]+)\}")


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    """Decode a byte that is not valid UTF-8 as Latin-1 (the corpus mixes both)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("feedback_latin1_fallback", _latin1_fallback)


def decode_defensively(raw: bytes) -> str:
    """Decode corpus bytes: UTF-8, then CESU-8 surrogate pairs, then Latin-1 byte by byte.

    Why: some SNIPS files hold Latin-1 bytes and emoji written as CESU-8 surrogate pairs.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("utf-8", errors="surrogatepass")
        return text.encode("utf-16", errors="surrogatepass").decode("utf-16", errors="replace")
    except UnicodeError:
        return raw.decode("utf-8", errors="feedback_latin1_fallback")


def normalize_text(text: str) -> str:
    """Lowercase and strip punctuation the way ASR 1-best output looks.

    Keeps letters (accented too), digits, apostrophes, ``&`` and inner hyphens; drops emoji,
    quotes and sentence punctuation; collapses whitespace.
    """
    text = unicodedata.normalize("NFC", text).lower().replace("\u2019", "'").replace("\u2018", "'")
    kept: list[str] = []
    for char in text:
        if char.isalnum() or char in "'&-":
            kept.append(char)
        else:
            kept.append(" ")
    words = [w.strip("'-") for w in "".join(kept).split()]
    return " ".join(w for w in words if w)


def _utterance_template(pieces: list[dict[str, Any]]) -> tuple[str, dict[str, str]] | None:
    """Turn one annotated utterance into (template, slot values), or None when unusable.

    Why None: a slot that occurs twice, or a slot value that normalises to nothing, cannot be
    substituted back unambiguously by the simulator.
    """
    parts: list[str] = []
    values: dict[str, str] = {}
    for piece in pieces:
        text = str(piece.get("text", ""))
        entity = piece.get("entity")
        if entity is None:
            parts.append(normalize_text(text))
            continue
        slot = str(entity)
        value = normalize_text(text)
        if not value or slot in values or not re.fullmatch(r"[A-Za-z_]+", slot):
            return None
        values[slot] = value
        parts.append("{" + slot + "}")
    template = " ".join(p for p in parts if p)
    if not values or len(template) > MAX_TEMPLATE_CHARS:
        return None
    if any(len(v) > MAX_VALUE_CHARS for v in values.values()):
        return None
    if _SLOT_RE.sub("", template).strip() == "":
        return None
    return template, values


def _top(counter: Counter[str], limit: int) -> list[list[Any]]:
    """Deterministic top-``limit`` as [text, count] pairs (count desc, then a stable hash).

    Why the hash: most entries occur once; breaking ties alphabetically would keep only the
    texts starting with "a".."c", a hash keeps an unbiased, reproducible sample.
    """
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], hashlib.sha1(kv[0].encode("utf-8")).hexdigest(), kv[0]))
    return [[text, count] for text, count in ranked[:limit]]


def read_intent(src: Path, intent: str) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Count the templates and slot values of one intent over its train and validate files."""
    templates: Counter[str] = Counter()
    values: dict[str, Counter[str]] = {}
    for name in (f"train_{intent}_full.json", f"validate_{intent}.json"):
        path = src / name
        if not path.is_file():
            raise FileNotFoundError(f"src: missing corpus file {path}")
        data = json.loads(decode_defensively(path.read_bytes()))
        for utterance in data[intent]:
            parsed = _utterance_template(utterance["data"])
            if parsed is None:
                continue
            template, slot_values = parsed
            templates[template] += 1
            for slot, value in slot_values.items():
                values.setdefault(slot, Counter())[value] += 1
    return templates, values


def build_resource(src: Path) -> dict[str, Any]:
    """Build the whole vendored structure (templates and vocabularies of every intent)."""
    intents: dict[str, Any] = {}
    for intent in INTENTS:
        templates, values = read_intent(src, intent)
        kept_templates = _top(templates, MAX_TEMPLATES_PER_INTENT)
        used_slots = sorted({s for t, _ in kept_templates for s in _SLOT_RE.findall(t)})
        intents[intent] = {
            "templates": kept_templates,
            "slots": {slot: _top(values[slot], MAX_VALUES_PER_SLOT) for slot in used_slots},
        }
    return {
        "source": SOURCE,
        "license": "CC0-1.0",
        "citation": CITATION,
        "derived": (
            "lowercased, punctuation stripped; top templates per intent and top values per slot "
            "by corpus count (train_*_full + validate_*), ties broken by SHA-1 of the text"
        ),
        "intents": intents,
    }


def write_gzip_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON gzip-compressed with a zero mtime so the bytes are reproducible."""
    payload = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(payload)
    path.write_bytes(buffer.getvalue())


def write_notice(src: Path, dst: Path, data: dict[str, Any]) -> None:
    """Write NOTICE.md: where the data comes from, how it was derived, and the CC0 text."""
    license_text = decode_defensively((src / "LICENSE").read_bytes()).strip()
    counts = "\n".join(
        f"| {intent} | {len(body['templates'])} | {len(body['slots'])} |"
        for intent, body in data["intents"].items()
    )
    notice = f"""# SNIPS NLU benchmark (derived copy)

`templates.json.gz` in this folder is derived from the SNIPS custom-intent benchmark:

- Source: {SOURCE} (https://github.com/sonos/nlu-benchmark)
- Licence: CC0 1.0 Universal (public domain dedication; full text below)
- Please cite: {CITATION}

Derivation (`scripts/vendor_snips.py`): utterances of the seven intents were lowercased and
stripped of punctuation; slot annotations became `{{slot}}` placeholders; the {MAX_TEMPLATES_PER_INTENT}
most frequent templates per intent and the {MAX_VALUES_PER_SLOT} most frequent values per
(intent, slot) were kept, with their corpus counts. The traffic simulator of this project
(`feedback.simulate`) composes synthetic requests from them.

| intent | templates | slots |
|---|---|---|
{counts}

## Licence text (CC0 1.0 Universal)

```
{license_text}
```
"""
    (dst / "NOTICE.md").write_text(notice, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: read ``--src``, write ``--dst``, print the sizes."""
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=root.parent / "shared" / "data" / "snips")
    parser.add_argument("--dst", type=Path, default=root / "src" / "feedback" / "resources" / "snips")
    args = parser.parse_args(argv)
    src: Path = args.src
    dst: Path = args.dst
    if not src.is_dir():
        raise FileNotFoundError(f"--src: not a directory: {src}")
    dst.mkdir(parents=True, exist_ok=True)
    for package in (dst.parent, dst):
        init = package / "__init__.py"
        if not init.exists():
            init.write_text("", encoding="utf-8")
    data = build_resource(src)
    write_gzip_json(data, dst / "templates.json.gz")
    write_notice(src, dst, data)
    total = 0
    for path in sorted(dst.iterdir()):
        if path.is_file():
            total += path.stat().st_size
            print(f"{path.relative_to(root) if path.is_relative_to(root) else path}: {path.stat().st_size} bytes")
    print(f"total: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
