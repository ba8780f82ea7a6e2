"""Traffic simulator: the project's demo, test and training data.

Simulates households talking to a voice assistant built on the intents of one corpus
(``simulation.corpus``: SNIPS or Schema-Guided Dialogue, vendored under ``feedback/resources``;
see ``feedback.simulate.corpus``) plus system commands, with systematic and random ASR errors, NLU
misroutes, unhandled/unsupported/error responses, and the users' implicit feedback: barge-ins,
"stop", rephrases (repeat, paraphrase, careful re-say), abandonment and rare explicit feedback.

``run(config, out_dir)`` writes contract-v1 event files in arrival order (with late files,
duplicate deliveries and malformed lines), ``ground_truth.jsonl`` (one line per unique event),
``malformed.jsonl`` (each injected line with its expected reason codes) and ``manifest.json``.
Same config and seed give byte-identical output.

Ground-truth definitions (computed from the generated timings, see ``feedback.simulate.truth``):

* ``barge_in``: the next event on the same device starts before the response ends
  (``ts + latency + duration``); for media (duration null) when it comes within
  ``MEDIA_BARGE_IN_WINDOW_S`` seconds of playback start.
* ``terminated``: the next event on the device is a stop/cancel command while the response plays
  or within ``TERMINATION_WINDOW_S`` seconds of its end; for media that keeps playing, within
  ``MEDIA_BARGE_IN_WINDOW_S`` seconds of playback start.
* ``defective``: the assistant did not serve the intended meaning (``defect_causes`` non-empty);
  system commands never are.
* ``failure_point``: the first component, in pipeline order, that failed for good:
  ``false_wake`` (a wake-up nobody meant, with ``simulation.false_wake_rate``), ``asr`` (a slot
  value misheard), ``nlu`` (a wrong intent, or words it could not interpret), ``entity`` (a
  value heard right resolved to another entity, with ``simulation.entity_error_rate``),
  ``result`` (an unsupported service or an error), ``none`` for no defect (``FAILURE_POINTS``).
* ``rephrase_of``: the previous attempt at the same need (a "stop" in between does not count).
* ``intended_text``: the user's own wording of this attempt, correctly transcribed (the ASR
  reference); ``utterance`` is what the recogniser produced.
* ``rewrite``, ``rewrite_layer``, ``defective_as_heard``: with ``simulation.rewriter`` (a
  treatment arm), the text the rewriter sent to the NLU instead of ``utterance``, its layer, and
  whether the request as heard would have been defective (the same draws without the rewrite);
  null for a request left as heard. A rewrite to another meaning, or to words no wording fits,
  is a defect with cause ``rewrite`` (``feedback.simulate.interpret``).
"""

from feedback.simulate.constants import (
    DEFECT_CAUSES,
    FAILURE_POINTS,
    MEDIA_BARGE_IN_WINDOW_S,
    SESSION_GAP_S,
    STOP_LIKE_INTENTS,
    SYSTEM_COMMANDS,
    TERMINATION_WINDOW_S,
)
from feedback.simulate.runner import SimulationSummary, run

__all__ = [
    "DEFECT_CAUSES",
    "FAILURE_POINTS",
    "MEDIA_BARGE_IN_WINDOW_S",
    "SESSION_GAP_S",
    "STOP_LIKE_INTENTS",
    "SYSTEM_COMMANDS",
    "TERMINATION_WINDOW_S",
    "SimulationSummary",
    "run",
]
