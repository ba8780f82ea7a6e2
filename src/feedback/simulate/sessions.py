"""Sessions and turns: what users say, what the assistant does, how users react.

A session is a burst of turns on one device. It serves 1..n *needs*; each need is a request the
user tries up to ``max_attempts`` times: after a defective response the user barges in, says
"stop", rephrases (same words, another wording, or the slot said more carefully) or gives up.
Successful responses are mostly heard out; music plays for minutes. Quick unrelated or same-domain
follow-ups and interruptions of correct responses are generated on purpose: they are the hard
negatives and the noise that keep a defect detector honest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from feedback.config import REPHRASE_STYLES, RephraseMix, SimulationConfig
from feedback.simulate.asr import carrier_word_error, random_word_error
from feedback.simulate.constants import (
    CAUSE_FAILURE_POINTS,
    CORRECTION_LEAD_IN,
    DEFECT_CAUSES,
    DIURNAL,
    FAILURE_POINTS,
    FALSE_WAKE_INTENT,
    LEAD_INS,
    MS_PER_DAY,
    SESSION_GAP_S,
    SYSTEM_COMMANDS,
    SYSTEM_DOMAIN,
)
from feedback.simulate.interpret import RequestRewriter, TextInterpreter, normalized, same_meaning
from feedback.simulate.population import Device, Household, pick_request
from feedback.simulate.responses import (
    ERROR_TEXT,
    Response,
    build_response,
    composed_content,
    success_content,
    unhandled_text,
    unsupported_text,
)
from feedback.simulate.world import Request, World, sample_cdf, shortened, with_lead_in

CAREFUL_FACTOR = 0.25
"""Saying a slot slowly and clearly cuts the chance of a systematic misrecognition to a quarter."""
ASR_UNHANDLED_SHARE = 0.35
"""Share of misheard slots the assistant cannot resolve at all (the rest give wrong content)."""
RANDOM_ERROR_ON_SLOT = 0.6
INTRINSIC_UNHANDLED = (0.006, 0.04)
"""Chance the NLU cannot parse a wording with < 3 slots, with >= 3 slots."""
NOISE_REPEAT_RATE = 0.004
"""A user repeats a correct spoken answer's request (did not hear it): a rephrase, no defect."""
FOLLOW_UP_SAME_DOMAIN = 0.18
QUICK_FOLLOW_UP = 0.4
MEDIA_CONTROL_RATE = 0.45
NEED_STOP_P = 0.3
"""Needs per session are geometric: mean about 1 / 0.3, so ~3.3 requests per session."""
MIN_BARGE_SPEECH_MS = 1500
_DIURNAL_CDF = np.cumsum(np.array(DIURNAL)) / float(np.sum(DIURNAL))


@dataclass(slots=True)
class Turn:
    """One request to the assistant, with both the event fields and the ground truth."""

    event_id: str
    household: Household
    device: Device
    session_key: str
    ts_ms: int
    utterance: str
    intended_text: str
    intended_intent: str
    intended_domain: str
    intended_slots: dict[str, str]
    is_system: bool
    asr_confidence: float | None
    nlu_confidence: float | None
    domain: str | None
    intent: str | None
    slots: dict[str, str] | None
    response: Response
    status: str
    causes: list[str]
    omit_locale: bool
    omit_device_type: bool
    rephrase_of: str | None = None
    rephrase_style: str | None = None
    abandoned: bool = False
    explicit_feedback: str | None = None
    barge_in: bool = False
    terminated: bool = False
    late: bool = False
    copies: int = 1
    ts: str = ""
    rewrite: RewriteRecord | None = None

    @property
    def failure_point(self) -> str:
        """The first component, in pipeline order, that failed for good (``FAILURE_POINTS``)."""
        return failure_point_of(self.causes)

    @property
    def play_start_ms(self) -> int:
        """When the response starts (playback start for media)."""
        return self.ts_ms + self.response.latency_ms

    @property
    def end_ms(self) -> int:
        """When the response ends (media: its start; it plays on)."""
        return self.play_start_ms + (self.response.duration_ms or 0)

    @property
    def is_media(self) -> bool:
        """True when the response keeps playing (no duration)."""
        return self.response.duration_ms is None


@dataclass
class _Outcome:
    """What the assistant made of one spoken request (before the Turn is assembled)."""

    utterance: str
    heard: dict[str, str]
    causes: list[str]
    asr_error: bool
    domain: str | None
    intent: str | None
    slots: dict[str, str] | None
    status: str
    response: Response
    nlu_confidence: float | None
    recognition_causes: list[str]
    """The ASR causes of what was heard (before any rewrite): what the recogniser's confidence reflects."""


@dataclass(frozen=True)
class RewriteRecord:
    """What a rewriter did to one request: the text it sent on, its layer, and whether the request
    as heard would have failed (the same draws without the rewrite)."""

    text: str
    layer: str
    defective_as_heard: bool


def failure_point_of(causes: Sequence[str]) -> str:
    """The earliest component in ``FAILURE_POINTS`` order that one of ``causes`` points at; ``none`` without causes."""
    points = {CAUSE_FAILURE_POINTS[cause] for cause in causes}
    return next((point for point in FAILURE_POINTS[1:] if point in points), "none")


def _same_meaning(request: Request, other: Request | None) -> bool:
    """Same intent and slot values (whatever the wording)."""
    return other is not None and request.intent == other.intent and sorted(request.slots) == sorted(other.slots)


def _pick_style(mix: RephraseMix, draw: float) -> str:
    """The rephrase style whose share of ``mix`` holds ``draw`` (uniform in [0, 1))."""
    weights = np.array(mix.weights(), dtype=np.float64)
    cumulative = np.cumsum(weights) / weights.sum()
    return REPHRASE_STYLES[min(int(np.searchsorted(cumulative, draw, side="right")), len(REPHRASE_STYLES) - 1)]


def _beta(rng: np.random.Generator, a: float, b: float) -> float:
    """A confidence score in [0, 1] with three decimals."""
    return round(float(rng.beta(a, b)), 3)


class SessionSimulator:
    """Generates all sessions of one household from its own random stream."""

    def __init__(
        self,
        config: SimulationConfig,
        world: World,
        household: Household,
        rng: np.random.Generator,
        window: tuple[int, int],
        rewriter: RequestRewriter | None = None,
        interpreter: TextInterpreter | None = None,
        session_streams: Callable[[int], np.random.Generator] | None = None,
    ) -> None:
        if rewriter is not None and interpreter is None:
            raise ValueError("interpreter: a rewriter needs the world's TextInterpreter to read what it returns")
        self.config = config
        self.behaviour = config.behaviour
        self.world = world
        self.household = household
        self.rng = rng
        self.start_ms, self.end_ms = window
        self.session_count = 0
        self.rewriter = rewriter
        self.interpreter = interpreter
        self.session_streams = session_streams
        """With ``simulation.paired_sessions``: session number -> its own random stream."""
        self.rewrite_from_ms = self.start_ms + config.rewrite_from_day * MS_PER_DAY

    # ----- ids and small draws ---------------------------------------------------------------

    def _event_id(self) -> str:
        """A random 128-bit hex id from the household's stream."""
        return self.rng.bytes(16).hex()

    def _uniform_ms(self, low_s: float, high_s: float) -> int:
        """A delay in whole milliseconds drawn uniformly from [low_s, high_s] seconds."""
        return int(round(self.rng.uniform(low_s, high_s) * 1000.0))

    # ----- speech recognition and understanding -------------------------------------------

    def _recognise(self, request: Request, careful: bool, device: Device) -> tuple[str, dict[str, str], list[str]]:
        """ASR: the utterance, the slot values as heard, and the ASR causes that fired."""
        rng = self.rng
        heard = request.slot_dict()
        causes: list[str] = []
        systematic_p = self.config.asr_systematic_error_rate * (CAREFUL_FACTOR if careful else 1.0)
        for slot, value in request.slots:
            confused = self.world.confusions.get(value)
            if confused is not None and rng.random() < systematic_p:
                heard[slot] = confused
                if "asr_systematic" not in causes:
                    causes.append("asr_systematic")
        random_p = self.config.asr_random_error_rate * (0.5 if careful else 1.0)
        random_p *= 2.0 if device.device_type == "car" else 1.0
        carrier_error = False
        if rng.random() < min(1.0, random_p):
            if request.slots and rng.random() < RANDOM_ERROR_ON_SLOT:
                slot = request.slots[int(rng.integers(len(request.slots)))][0]
                heard[slot] = random_word_error(heard[slot], rng)
                causes.append("asr_random")
            else:
                carrier_error = True
        pieces = [heard.get(text, "") if is_slot else text for text, is_slot in request.template.parts]
        if carrier_error:
            literals = [i for i, (_, is_slot) in enumerate(request.template.parts) if not is_slot]
            if literals:
                index = literals[int(rng.integers(len(literals)))]
                pieces[index] = carrier_word_error(pieces[index], rng)
        utterance = " ".join(" ".join(p for p in pieces if p).split())
        return utterance or request.text(), heard, causes

    def _misroute(self, request: Request) -> str | None:
        """The wrong intent the NLU picks, or None when it routes correctly."""
        rng = self.rng
        target = self.world.ambiguous.get((request.intent, request.template.index))
        if target is not None and rng.random() < self.config.nlu_systematic_misroute_rate:
            return target
        if rng.random() < self.config.nlu_misroute_rate:
            others = [i for i in self.world.corpus.intents if i != request.intent]
            return others[int(rng.integers(len(others)))]
        return None

    def _unsupported(self, request: Request, heard: dict[str, str], device: Device) -> str | None:
        """Why the request cannot be served here ("" for the device, the value for a service)."""
        corpus = self.world.corpus
        if (request.intent, device.device_type) in corpus.unsupported_on_device:
            return ""
        if corpus.unsupported_slot is None:
            return None
        service = heard.get(corpus.unsupported_slot[1])
        if service is not None and service in self.world.unsupported_values:
            return service
        return None

    def _understand(self, request: Request, careful: bool, device: Device, ts_ms: int) -> tuple[_Outcome, RewriteRecord | None]:
        """Run ASR, the rewriter (when one is on), NLU and fulfilment for one spoken request.

        Why the saved random state: with a rewrite, the same draws first serve the request as
        heard, which is exactly what the arm without a rewriter does with it; that outcome is
        recorded beside the rewritten one, so each rewrite is judged against its own counterfactual.
        """
        utterance, heard, asr_causes = self._recognise(request, careful, device)
        rewrite = self._rewrite(utterance, ts_ms)
        if rewrite is None:
            return self._serve(request, utterance, heard, asr_causes, device), None
        text, layer = rewrite
        state = self.rng.bit_generator.state
        as_heard = self._serve(request, utterance, heard, asr_causes, device)
        self.rng.bit_generator.state = state
        understood = self.interpreter.interpret(text, request) if self.interpreter is not None else None
        if understood is None:
            outcome = self._uninterpretable(utterance, asr_causes)
        elif same_meaning(request, understood):
            fixed = request.with_template(understood.template)
            outcome = self._serve(fixed, utterance, fixed.slot_dict(), [], device)
        else:
            outcome = self._serve(understood, utterance, understood.slot_dict(), ["rewrite"], device)
        outcome.recognition_causes = list(asr_causes)
        return outcome, RewriteRecord(text, layer, bool(as_heard.causes))

    def _rewrite(self, utterance: str, ts_ms: int) -> tuple[str, str] | None:
        """The rewriter's answer for ``utterance`` when a rewriter is on at ``ts_ms`` and changes the text."""
        if self.rewriter is None or ts_ms < self.rewrite_from_ms:
            return None
        answer = self.rewriter.rewrite(utterance, self.household.user_id)
        if answer is None or normalized(answer[0]) == normalized(utterance):
            return None
        return answer

    def _uninterpretable(self, utterance: str, asr_causes: list[str]) -> _Outcome:
        """A rewrite the NLU cannot read: nothing is understood, the assistant says so."""
        rng = self.rng
        response = build_response("speech", unhandled_text(None, rng), "unhandled", rng)
        nlu_conf = _beta(rng, 2, 6) if rng.random() < 0.5 else None
        return _Outcome(utterance, {}, ["rewrite"], False, None, None, None, "unhandled", response, nlu_conf, list(asr_causes))

    def _serve(self, request: Request, utterance: str, heard: dict[str, str], prior_causes: list[str], device: Device) -> _Outcome:
        """NLU and fulfilment of ``request`` as understood from ``heard``, after ``prior_causes`` (ASR or rewrite)."""
        rng = self.rng
        causes = list(prior_causes)
        target = self._misroute(request)
        if target is not None:
            causes.append("nlu_misroute")
        asr_error = any(cause.startswith("asr_") for cause in prior_causes)
        routed = target or request.intent
        intent: str | None = routed
        domain: str | None = self.world.corpus.domains[routed]
        first_value = heard[request.slots[0][0]] if request.slots else None
        slots: dict[str, str] | None = dict(heard)
        if target is not None:
            primary = self.world.corpus.primary_slot[target]
            slots = {primary: first_value} if first_value and primary else {}
        if target is None and self.config.entity_error_rate > 0 and request.slots and slots is not None:
            # Drawn only when the rate is set, so traffic without entity errors is unchanged.
            if rng.random() < self.config.entity_error_rate:
                slot, value = request.slots[int(rng.integers(len(request.slots)))]
                other = self.world.draw_value(request.intent, slot, rng)
                if heard[slot] == value and other != value:
                    slots[slot] = other
                    causes.append("entity_resolution")
        nlu_conf: float | None = _beta(rng, 5, 3) if target else _beta(rng, 12, 1.5 if not asr_error else 3.0)
        unsupported = self._unsupported(request, heard, device) if target is None else None
        status = "success"
        if rng.random() < self.config.error_status_rate:
            status = "error"
            causes.append("error")
            if rng.random() < 0.7:
                response = build_response("speech", ERROR_TEXT, "error", rng)
            else:
                response = build_response("none", None, "error", rng)
            if rng.random() < 0.5:
                intent = domain = None
                slots = None
        elif unsupported is not None:
            status = "unhandled"
            causes.append("unsupported")
            text = unsupported_text(unsupported or None, rng)
            response = build_response("speech", text, "unhandled", rng)
        elif asr_error and target is None and rng.random() < ASR_UNHANDLED_SHARE:
            status = "unhandled"
            causes.append("unhandled")
            missing = next((heard[s] for s, v in request.slots if heard[s] != v), None)
            response = build_response("speech", unhandled_text(missing, rng), "unhandled", rng)
            nlu_conf = _beta(rng, 6, 3)
        elif target is None and rng.random() < INTRINSIC_UNHANDLED[len(request.slots) >= 3]:
            status = "unhandled"
            causes.append("unhandled")
            response = build_response("speech", unhandled_text(None, rng), "unhandled", rng)
            intent = domain = None
            slots = None
            nlu_conf = _beta(rng, 2, 6) if rng.random() < 0.5 else None
        else:
            response_type, text = self._success_content(str(intent), slots or {})
            kind = "media" if response_type == "media" else "ok"
            shown: str | None = text if response_type != "media" or rng.random() < 0.6 else None
            response = build_response(response_type, shown, kind, rng)
        ordered = [c for c in DEFECT_CAUSES if c in causes]
        recognition = [c for c in prior_causes if c.startswith("asr_")]
        return _Outcome(utterance, heard, ordered, asr_error, domain, intent, slots or None, status, response, nlu_conf, recognition)

    def _success_content(self, intent: str, slots: dict[str, str]) -> tuple[str, str]:
        """(response_type, text) of a served request, scripted for SNIPS, composed otherwise."""
        corpus = self.world.corpus
        if corpus.scripted_responses:
            return success_content(intent, slots, self.rng)
        return composed_content(intent, corpus.domains[intent], slots, intent in corpus.media_intents, self.rng)

    def _asr_confidence(self, outcome: _Outcome) -> float:
        """Lower when the recogniser erred, but overlapping with correct turns."""
        if "asr_systematic" in outcome.recognition_causes:
            return _beta(self.rng, 6, 2.5)
        if "asr_random" in outcome.recognition_causes:
            return _beta(self.rng, 5, 3)
        return _beta(self.rng, 14, 1.6)

    # ----- turns ------------------------------------------------------------------------------

    def _omissions(self) -> tuple[bool, bool]:
        """Whether this event omits locale (~5%) and device_type (~3%)."""
        return self.rng.random() < 0.05, self.rng.random() < 0.03

    def request_turn(self, request: Request, careful: bool, device: Device, ts_ms: int, session_key: str) -> Turn:
        """One spoken request of ``request``'s meaning in ``request``'s wording."""
        rng = self.rng
        outcome, rewrite = self._understand(request, careful, device, ts_ms)
        omit_locale, omit_device_type = self._omissions()
        asr_conf: float | None = self._asr_confidence(outcome)
        if rng.random() < 0.02:
            asr_conf = None
        nlu_conf = outcome.nlu_confidence if rng.random() >= 0.02 else None
        feedback: str | None = None
        draw = rng.random()
        if outcome.causes and draw < self.config.explicit_feedback_rate:
            feedback = "negative"
        elif not outcome.causes and draw < 0.003:
            feedback = "positive"
        elif not outcome.causes and draw < 0.0035:
            feedback = "negative"
        return Turn(
            event_id=self._event_id(),
            household=self.household,
            device=device,
            session_key=session_key,
            ts_ms=ts_ms,
            utterance=outcome.utterance,
            intended_text=request.text(),
            intended_intent=request.intent,
            intended_domain=self.world.corpus.domains[request.intent],
            intended_slots=request.slot_dict(),
            is_system=False,
            asr_confidence=asr_conf,
            nlu_confidence=nlu_conf,
            domain=outcome.domain,
            intent=outcome.intent,
            slots=outcome.slots,
            response=outcome.response,
            status=outcome.status,
            causes=outcome.causes,
            omit_locale=omit_locale,
            omit_device_type=omit_device_type,
            explicit_feedback=feedback,
            rewrite=rewrite,
        )

    def command_turn(self, intent: str, device: Device, ts_ms: int, session_key: str) -> Turn:
        """A system command ("stop", "never mind", "pause", "skip"): always understood."""
        rng = self.rng
        wordings = SYSTEM_COMMANDS[intent]
        weights = 1.0 / np.arange(1, len(wordings) + 1, dtype=np.float64)
        wording = wordings[sample_cdf(np.cumsum(weights) / weights.sum(), rng)]
        if intent == "Next":
            response = build_response("media", None, "command", rng)
        elif intent == "Cancel" and rng.random() < 0.5:
            response = build_response("speech", "Okay.", "command", rng)
        else:
            response = build_response("action", None, "command", rng)
        omit_locale, omit_device_type = self._omissions()
        return Turn(
            event_id=self._event_id(),
            household=self.household,
            device=device,
            session_key=session_key,
            ts_ms=ts_ms,
            utterance=wording,
            intended_text=wording,
            intended_intent=intent,
            intended_domain=SYSTEM_DOMAIN,
            intended_slots={},
            is_system=True,
            asr_confidence=_beta(rng, 20, 1.5),
            nlu_confidence=_beta(rng, 20, 1.2),
            domain=SYSTEM_DOMAIN,
            intent=intent,
            slots=None,
            response=response,
            status="success",
            causes=[],
            omit_locale=omit_locale,
            omit_device_type=omit_device_type,
        )

    def false_wake(self, device: Device, ts_ms: int, session_key: str) -> tuple[Turn, Turn | None]:
        """A wake-up nobody meant: a fragment of speech, heard with low confidence, that the assistant
        still acts on; half the time the user stops it, else lets it pass. Returns (the turn, the stop or None)."""
        rng = self.rng
        words = self.world.draw_catalog(rng).text().split()
        fragment = " ".join(words[: 1 + int(rng.integers(2))])
        intent = self.world.corpus.intents[int(rng.integers(len(self.world.corpus.intents)))]
        if rng.random() < 0.6:
            status, domain, acted = "unhandled", None, None
            response = build_response("speech", unhandled_text(None, rng), "unhandled", rng)
        else:
            status, domain, acted = "success", self.world.corpus.domains[intent], intent
            response_type, text = self._success_content(intent, {})
            media = response_type == "media"
            response = build_response(response_type, None if media else text, "media" if media else "ok", rng)
        omit_locale, omit_device_type = self._omissions()
        wake = Turn(
            event_id=self._event_id(),
            household=self.household,
            device=device,
            session_key=session_key,
            ts_ms=ts_ms,
            utterance=fragment,
            intended_text="",
            intended_intent=FALSE_WAKE_INTENT,
            intended_domain=FALSE_WAKE_INTENT,
            intended_slots={},
            is_system=False,
            asr_confidence=_beta(rng, 2, 5),
            nlu_confidence=_beta(rng, 2, 5),
            domain=domain,
            intent=acted,
            slots=None,
            response=response,
            status=status,
            causes=["false_wake"],
            omit_locale=omit_locale,
            omit_device_type=omit_device_type,
        )
        if rng.random() < 0.5:
            if wake.is_media:
                at = self._media_reaction(wake)
            elif self._can_barge_speech(wake):
                at = self._during_speech(wake)
            else:
                at = self._after_end(wake, 0.5, 3)
            return wake, self.command_turn("Stop", device, at, session_key)
        return wake, None

    # ----- timing --------------------------------------------------------------------------

    def _after_end(self, turn: Turn, low_s: float, high_s: float) -> int:
        """A moment ``low_s..high_s`` seconds after the response ended."""
        return turn.end_ms + self._uniform_ms(low_s, high_s)

    def _retry_delay(self, turn: Turn) -> int:
        """When a user who waited for the end says the request again (the profile's think time)."""
        low, high = self.behaviour.retry_delay_s
        return self._after_end(turn, low, high)

    def _media_reaction(self, turn: Turn) -> int:
        """When a user reacts to media that started playing (the profile's reaction time)."""
        low, high = self.behaviour.media_reaction_s
        return self._into_playback(turn, low, high)

    def _into_playback(self, turn: Turn, low_s: float, high_s: float) -> int:
        """A moment ``low_s..high_s`` seconds after playback started."""
        return turn.play_start_ms + self._uniform_ms(low_s, high_s)

    def _during_speech(self, turn: Turn) -> int:
        """A moment while the response is still being spoken (a barge-in)."""
        duration = turn.response.duration_ms or 0
        low, high = self.behaviour.barge_in_point
        return turn.play_start_ms + int(duration * self.rng.uniform(low, high))

    def _can_barge_speech(self, turn: Turn) -> bool:
        """Speech long enough to be interrupted."""
        return not turn.is_media and (turn.response.duration_ms or 0) >= MIN_BARGE_SPEECH_MS

    # ----- needs and reactions ---------------------------------------------------------------

    def _rephrase(self, request: Request, causes: list[str]) -> tuple[Request, bool, str]:
        """The next attempt's wording, whether the slot is said carefully, and the style used.

        Why by cause: misheard slots call for saying them again clearly, misroutes for another
        wording (the profile's mixes say how often each), errors for a plain retry.
        """
        rng = self.rng
        draw = rng.random()
        asr = "asr_systematic" in causes or "asr_random" in causes
        if asr or "entity_resolution" in causes:  # say the value again, more specifically
            style = _pick_style(self.behaviour.rephrase_misheard, draw)
        elif "nlu_misroute" in causes or "unhandled" in causes:
            style = _pick_style(self.behaviour.rephrase_misunderstood, draw)
        elif "error" in causes:
            style = "repeat" if draw < 0.8 else "reword"
        else:
            style = "repeat" if draw < 0.5 else "reword"
        derived: Request | None = None
        if style == "shorten":
            derived = shortened(request)
        elif style == "add_words":
            derived = with_lead_in(request, LEAD_INS[int(rng.integers(len(LEAD_INS)))])
        elif style == "correct_slot" and request.slots:
            return with_lead_in(request, CORRECTION_LEAD_IN), True, style
        elif style == "switch":
            derived = self.world.switched_phrasing(request, rng)
        if derived is not None:
            return derived, False, style
        if style not in ("repeat", "careful"):
            paraphrase = self.world.paraphrase_of(request, rng)
            if paraphrase is not None:
                return paraphrase, False, "reword"
            style = "careful" if asr else "repeat"
        return request, style == "careful", style

    def _abandon(self, attempt: int, causes: list[str]) -> bool:
        """Whether the user gives up after a failed attempt (more likely the more they tried)."""
        if attempt >= self.config.max_attempts:
            return True
        probability = self.config.abandon_rate * (1.0 + 0.6 * (attempt - 1))
        if "unsupported" in causes:
            probability = max(probability, 0.6)
        return self.rng.random() < min(1.0, probability)

    def _give_up_reaction(self, turn: Turn, session_key: str) -> Turn | None:
        """The stop or cancel a user who gives up says to the wrong response, or None (a silent give-up).

        Most users cut off an answer they did not ask for; ``silent_give_up_rate`` of them just
        let it play and move on, which no implicit signal can reveal.
        """
        rng = self.rng
        if rng.random() < self.config.silent_give_up_rate:
            return None
        if turn.is_media:
            return self.command_turn("Stop", turn.device, self._media_reaction(turn), session_key)
        if self._can_barge_speech(turn) and rng.random() < self.behaviour.give_up_stop_share:
            return self.command_turn("Stop", turn.device, self._during_speech(turn), session_key)
        return self.command_turn("Cancel", turn.device, self._after_end(turn, 0.5, 4), session_key)

    def _retry_timing(self, turn: Turn, session_key: str) -> tuple[int, Turn | None]:
        """When the rephrase comes, and the stop/skip said before it, if any."""
        rng = self.rng
        behaviour = self.behaviour
        if turn.is_media:
            draw = rng.random()
            if draw < behaviour.media_stop_share:
                stop = self.command_turn("Stop", turn.device, self._media_reaction(turn), session_key)
                return self._after_end(stop, 0.8, 3), stop
            if draw < behaviour.media_stop_share + behaviour.media_skip_share:
                skip = self.command_turn("Next", turn.device, self._media_reaction(turn), session_key)
                return self._into_playback(skip, 2, 10), skip
            return self._media_reaction(turn), None
        if self._can_barge_speech(turn) and rng.random() < behaviour.speech_barge_in_rate:
            if rng.random() < behaviour.stop_first_share:
                stop = self.command_turn("Stop", turn.device, self._during_speech(turn), session_key)
                return self._after_end(stop, 0.8, 3), stop
            return self._during_speech(turn), None
        if rng.random() < 0.05:
            cancel = self.command_turn("Cancel", turn.device, self._after_end(turn, 0.5, 3), session_key)
            return self._after_end(cancel, 0.8, 3), cancel
        return self._retry_delay(turn), None

    def run_need(self, request: Request, ts_ms: int, device: Device, session_key: str) -> list[Turn]:
        """All turns of one need: attempts, stops in between, the final give-up reaction."""
        rng = self.rng
        turns: list[Turn] = []
        previous: Turn | None = None
        wording = request
        careful = False
        style = "repeat"
        attempt = 1
        while True:
            turn = self.request_turn(wording, careful, device, ts_ms, session_key)
            if previous is not None:
                turn.rephrase_of, turn.rephrase_style = previous.event_id, style
            turns.append(turn)
            if not turn.causes:
                repeat = (
                    not turn.is_media
                    and attempt < self.config.max_attempts
                    and rng.random() < NOISE_REPEAT_RATE
                )
                if not repeat:
                    return turns
                previous, careful, style, attempt = turn, False, "repeat", attempt + 1
                ts_ms = self._after_end(turn, 1, 3)
                continue
            if self._abandon(attempt, turn.causes):
                turn.abandoned = True
                reaction = self._give_up_reaction(turn, session_key)
                if reaction is not None:
                    turns.append(reaction)
                return turns
            wording, careful, style = self._rephrase(wording, turn.causes)
            ts_ms, interjection = self._retry_timing(turn, session_key)
            if interjection is not None:
                turns.append(interjection)
            previous = turn
            attempt += 1

    def _follow_up(self, previous: Request) -> Request | None:
        """A same-domain follow-up (another city's weather): same wording, one value changed."""
        rng = self.rng
        entity = [slot for slot, _ in previous.slots if slot in self.world.corpus.entity_slots]
        if not entity:
            return None
        slot = entity[int(rng.integers(len(entity)))]
        current = previous.slot_dict()[slot]
        for _ in range(4):
            value = self.world.draw_value(previous.intent, slot, rng)
            if value != current:
                slots = tuple((s, value if s == slot else v) for s, v in previous.slots)
                return Request(previous.intent, previous.template, slots)
        return None

    def _next_request(self, turns: list[Turn], asked: list[Request]) -> Request:
        """The next need of a session: a same-domain follow-up or a fresh request.

        Why the redraws: asking the very same thing again in one session would be a rephrase,
        and ground truth must not contain unlabelled rephrases.
        """
        rng = self.rng
        last_request = next((t for t in reversed(turns) if not t.is_system), None)
        last_ok = last_request is not None and not last_request.causes
        if asked and last_ok and rng.random() < FOLLOW_UP_SAME_DOMAIN:
            follow = self._follow_up(asked[-1])
            if follow is not None and not any(_same_meaning(follow, a) for a in asked):
                return follow
        for _ in range(8):
            request = pick_request(self.household, self.world, rng)
            if not any(_same_meaning(request, a) for a in asked):
                return request
        for request in self.world.catalog:
            if not any(_same_meaning(request, a) for a in asked):
                return request
        raise RuntimeError("catalog exhausted")

    def _media_control(self, turn: Turn, session_key: str) -> Turn | None:
        """Later "next"/"pause"/"stop" on music that plays on (or, rarely, an early skip: noise)."""
        rng = self.rng
        if not turn.is_media or turn.causes:
            return None
        if rng.random() < self.config.noise_barge_in_rate:
            intent = "Next" if rng.random() < 0.6 else "Stop"
            return self.command_turn(intent, turn.device, self._into_playback(turn, 3, 20), session_key)
        if rng.random() >= MEDIA_CONTROL_RATE:
            return None
        draw = rng.random()
        intent = "Next" if draw < 0.45 else "Pause" if draw < 0.65 else "Stop"
        return self.command_turn(intent, turn.device, self._into_playback(turn, 40, 400), session_key)

    def _next_need_time(self, last: Turn) -> int:
        """When the next need starts after ``last`` (quick follow-ups are hard negatives)."""
        rng = self.rng
        if last.is_media:
            if not last.causes and rng.random() < self.config.noise_barge_in_rate:
                return self._into_playback(last, 5, 25)
            return self._into_playback(last, 45, 600)
        if last.causes:
            return self._after_end(last, 3, 60)
        draw = rng.random()
        if draw < self.config.noise_barge_in_rate and self._can_barge_speech(last):
            return self._during_speech(last)
        if draw < QUICK_FOLLOW_UP:
            return self._after_end(last, 2, 10)
        return self._after_end(last, 10, 120)

    def session(self, start_ms: int, device: Device) -> list[Turn]:
        """One session on ``device`` starting at ``start_ms``."""
        rng = self.rng
        self.session_count += 1
        session_key = f"{self.household.user_id}-s{self.session_count:04d}"
        turns: list[Turn] = []
        needs = min(int(rng.geometric(NEED_STOP_P)), 8)
        asked: list[Request] = []
        first_ms = start_ms
        if self.config.false_wake_rate > 0 and rng.random() < self.config.false_wake_rate:
            wake, reaction = self.false_wake(device, start_ms, session_key)
            turns.append(wake)
            if reaction is not None:
                turns.append(reaction)
            first_ms = self._after_end(turns[-1], 20, 120)
        for number in range(needs):
            if number == 0:
                ts_ms = first_ms
                request = pick_request(self.household, self.world, rng)
            else:
                control = self._media_control(turns[-1], session_key)
                if control is not None:
                    turns.append(control)
                request = self._next_request(turns, asked)
                ts_ms = self._next_need_time(turns[-1])
            turns.extend(self.run_need(request, ts_ms, device, session_key))
            asked.append(request)
        control = self._media_control(turns[-1], session_key)
        if control is not None:
            turns.append(control)
        return turns

    # ----- scheduling ------------------------------------------------------------------------

    def _planned_starts(self, start_weekday: int) -> list[tuple[int, int]]:
        """(UTC start ms, local hour) of every session, diurnal in the household's local time."""
        rng = self.rng
        offset_ms = self.household.tz_offset_min * 60_000
        planned: list[tuple[int, int]] = []
        days = (self.end_ms - self.start_ms) // MS_PER_DAY
        for day in range(days):
            weekend = (start_weekday + day) % 7 >= 5
            rate = self.config.sessions_per_user_day * self.household.activity * (1.15 if weekend else 0.95)
            for _ in range(int(rng.poisson(rate))):
                hour = sample_cdf(_DIURNAL_CDF, rng)
                local_ms = hour * 3_600_000 + int(rng.integers(3_600_000))
                utc = self.start_ms + day * MS_PER_DAY + local_ms - offset_ms
                if utc < self.start_ms:
                    utc += MS_PER_DAY
                elif utc >= self.end_ms:
                    utc -= MS_PER_DAY
                planned.append((utc, hour))
        planned.sort()
        return planned

    def all_sessions(self, start_weekday: int) -> tuple[list[Turn], int]:
        """Every turn of the household and the number of sessions kept.

        Why the shift: sessions of one device must be >= 30 minutes of silence apart, so a
        session planned too early moves after the previous one; a session that would run past the
        simulated window is dropped whole (no dangling rephrase links).
        """
        last_end: dict[str, int] = {}
        turns: list[Turn] = []
        kept = 0
        for number, (planned, hour) in enumerate(self._planned_starts(start_weekday)):
            device = self.household.device_for_hour(hour, self.rng)
            earliest = last_end.get(device.device_id, -(10**15)) + SESSION_GAP_S * 1000
            if self.session_streams is None:
                start = max(planned, earliest + self._uniform_ms(1, 600) if planned < earliest else planned)
                session = self.session(start, device)
            else:
                shift = self._uniform_ms(1, 600)  # drawn always: the household's draws must not depend on its sessions
                start = max(planned, earliest + shift if planned < earliest else planned)
                home, self.rng = self.rng, self.session_streams(number)
                try:
                    session = self.session(start, device)
                finally:
                    self.rng = home
            if session[-1].ts_ms >= self.end_ms:
                continue
            last_end[device.device_id] = max(t.end_ms for t in session)
            turns.extend(session)
            kept += 1
        return turns, kept
