"""Vendor a compact, derived copy of the Schema-Guided Dialogue requests into the package.

The traffic simulator's second corpus (``simulation.corpus: sgd``): conversational wordings of
46 intents in 20 domains, against SNIPS's terse commands, so that a detector tuned on one corpus
can be judged on the other. Like ``scripts/vendor_snips.py``, this reads the raw rows once and
writes ``src/feedback/resources/sgd/``:

* ``templates.json.gz``: per intent, its domain, its templates (entity spans replaced by
  ``{slot}`` placeholders, lowercased, punctuation stripped) with their counts, and per
  (intent, slot) the values seen in the spans;
* ``NOTICE.md``: attribution and the CC BY-SA 4.0 licence text (derived data keeps the licence).

Templates, rather than whole requests, so that the simulator can recombine wordings with values
and paraphrase a request with another wording of the same slots. A row whose entities overlap,
repeat a slot, or normalise to nothing is skipped (and counted). Output is byte-identical on
re-runs (sorted keys, gzip without a timestamp).

Usage::

    .venv/bin/python scripts/vendor_sgd.py [--src ../shared/data/sgd] [--dst src/feedback/resources/sgd]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from vendor_snips import MAX_VALUE_CHARS, _top, decode_defensively, normalize_text, write_gzip_json

MAX_TEMPLATES_PER_INTENT = 300
MAX_VALUES_PER_SLOT = 300
MAX_TEMPLATE_CHARS = 160
SOURCE = "google-research-datasets/dstc8-schema-guided-dialogue (user turns that state an intent)"
CITATION = (
    'Rastogi A. et al., "Towards Scalable Multi-domain Conversational Agents: The Schema-Guided '
    'Dialogue Dataset", AAAI 2020'
)
_SLOT_NAME = re.compile(r"[a-z_]+")


def request_template(text: str, entities: list[dict[str, Any]]) -> tuple[str, dict[str, str]] | None:
    """One request's (template, slot values), or None when the spans cannot be substituted back.

    Args:
        text: the request as typed.
        entities: ``{"entity", "value", "start", "end"}`` spans into ``text`` (end exclusive).
    """
    parts: list[str] = []
    values: dict[str, str] = {}
    position = 0
    for entity in sorted(entities, key=lambda e: (int(e["start"]), int(e["end"]))):
        start, end, slot = int(entity["start"]), int(entity["end"]), str(entity["entity"])
        value = normalize_text(text[start:end])
        if start < position or not value or slot in values or not _SLOT_NAME.fullmatch(slot):
            return None
        if len(value) > MAX_VALUE_CHARS:
            return None
        parts.append(normalize_text(text[position:start]))
        parts.append("{" + slot + "}")
        values[slot] = value
        position = end
    parts.append(normalize_text(text[position:]))
    template = " ".join(p for p in parts if p)
    literal = re.sub(r"\{[a-z_]+\}", "", template).strip()
    if not literal or len(template) > MAX_TEMPLATE_CHARS:
        return None
    return template, values


def build_resource(src: Path) -> tuple[dict[str, Any], int]:
    """The vendored structure of every intent, and how many rows were skipped."""
    path = src / "requests.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"src: missing corpus file {path}")
    templates: dict[str, Counter[str]] = {}
    values: dict[tuple[str, str], Counter[str]] = {}
    domains: dict[str, Counter[str]] = {}
    skipped = 0
    for line in decode_defensively(path.read_bytes()).splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        intent = str(row["intent"])
        parsed = request_template(str(row["text"]), list(row["entities"]))
        if parsed is None:
            skipped += 1
            continue
        template, slot_values = parsed
        templates.setdefault(intent, Counter())[template] += 1
        domains.setdefault(intent, Counter())[str(row["domain"])] += 1
        for slot, value in slot_values.items():
            values.setdefault((intent, slot), Counter())[value] += 1
    intents: dict[str, Any] = {}
    for intent in sorted(templates):
        kept = _top(templates[intent], MAX_TEMPLATES_PER_INTENT)
        used_slots = sorted({s for t, _ in kept for s in re.findall(r"\{([a-z_]+)\}", t)})
        # An intent in two services' domains (FindMovies: movies and media) takes the commoner one.
        domain = sorted(domains[intent].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        intents[intent] = {
            "domain": domain,
            "templates": kept,
            "slots": {slot: _top(values[(intent, slot)], MAX_VALUES_PER_SLOT) for slot in used_slots},
        }
    resource = {
        "source": SOURCE,
        "license": "CC-BY-SA-4.0",
        "citation": CITATION,
        "derived": (
            "entity spans replaced by {slot} placeholders; lowercased, punctuation stripped; "
            "top templates per intent and top values per slot by count, ties broken by SHA-1 of the text"
        ),
        "intents": intents,
    }
    return resource, skipped


def write_notice(src: Path, dst: Path, data: dict[str, Any], skipped: int) -> None:
    """Write NOTICE.md: where the data comes from, how it was derived, and the licence text."""
    license_text = decode_defensively((src / "LICENSE").read_bytes()).strip()
    counts = "\n".join(
        f"| {intent} | {body['domain']} | {len(body['templates'])} | {len(body['slots'])} |"
        for intent, body in data["intents"].items()
    )
    notice = f"""# Schema-Guided Dialogue requests (derived copy)

`templates.json.gz` in this folder is derived from the Schema-Guided Dialogue dataset:

- Source: {SOURCE} (https://github.com/google-research-datasets/dstc8-schema-guided-dialogue)
- Licence: Creative Commons Attribution-ShareAlike 4.0 International (full text below). This
  derived copy, and traffic the simulator composes from it, is shared under the same licence.
- Please cite: {CITATION}

Derivation (`scripts/vendor_sgd.py`): each request's entity spans became `{{slot}}`
placeholders, and its text was lowercased and stripped of punctuation; per intent the
{MAX_TEMPLATES_PER_INTENT} most frequent templates and per (intent, slot) the {MAX_VALUES_PER_SLOT}
most frequent values were kept, with their counts. {skipped} requests whose spans overlap, repeat a
slot or leave no words were skipped. The traffic simulator of this project (`feedback.simulate`,
`simulation.corpus: sgd`) composes synthetic requests from them.

| intent | domain | templates | slots |
|---|---|---|---|
{counts}

## Licence text (CC BY-SA 4.0)

```
{license_text}
```
"""
    (dst / "NOTICE.md").write_text(notice, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: read ``--src``, write ``--dst``, print the sizes."""
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=root.parent / "shared" / "data" / "sgd")
    parser.add_argument("--dst", type=Path, default=root / "src" / "feedback" / "resources" / "sgd")
    args = parser.parse_args(argv)
    src: Path = args.src
    dst: Path = args.dst
    if not src.is_dir():
        raise FileNotFoundError(f"--src: not a directory: {src}")
    dst.mkdir(parents=True, exist_ok=True)
    init = dst / "__init__.py"
    if not init.exists():
        init.write_text("", encoding="utf-8")
    data, skipped = build_resource(src)
    write_gzip_json(data, dst / "templates.json.gz")
    write_notice(src, dst, data, skipped)
    for path in sorted(dst.iterdir()):
        if path.is_file():
            print(f"{path.relative_to(root) if path.is_relative_to(root) else path}: {path.stat().st_size} bytes")
    print(f"{len(data['intents'])} intents, {skipped} requests skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
