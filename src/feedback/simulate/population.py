"""Households: the account (``user_id``), its 1-3 devices, locale, time zone and habits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feedback.simulate.constants import APP_VERSIONS, DEVICE_TYPES, LOCALES
from feedback.simulate.world import Request, World, sample_cdf

# Relative chance a session happens on a device of each type.
DEVICE_USE: dict[str, float] = {"speaker": 1.0, "display": 0.9, "phone": 0.45, "tv": 0.35, "car": 0.3}
# Chance a second/third device is of each type (the first is a speaker or a display).
EXTRA_DEVICE_SHARE: dict[str, float] = {"speaker": 0.2, "display": 0.25, "phone": 0.25, "tv": 0.15, "car": 0.15}
COMMUTE_HOURS = (7, 8, 17, 18)


@dataclass(frozen=True)
class Device:
    """One device of a household; ``ts_offset_min`` None means it reports UTC (``Z``)."""

    device_id: str
    device_type: str
    ts_offset_min: int | None
    app_version: str | None


@dataclass(frozen=True)
class Household:
    """A household account: who sends the traffic and what it likes to ask."""

    index: int
    user_id: str
    locale: str
    tz_offset_min: int
    devices: tuple[Device, ...]
    activity: float
    favourites: tuple[Request, ...]
    favourite_cdf: np.ndarray
    favourite_share: float

    def device_for_hour(self, local_hour: int, rng: np.random.Generator) -> Device:
        """The device a session starting at ``local_hour`` happens on (cars at commute times)."""
        weights = np.array(
            [
                DEVICE_USE[d.device_type] * (4.0 if d.device_type == "car" and local_hour in COMMUTE_HOURS else 1.0)
                for d in self.devices
            ],
            dtype=np.float64,
        )
        cdf = np.cumsum(weights) / weights.sum()
        return self.devices[sample_cdf(cdf, rng)]


def _pick_locale(rng: np.random.Generator) -> tuple[str, int]:
    """A locale and a UTC offset (minutes) of a household."""
    shares = np.array([share for _, _, share in LOCALES], dtype=np.float64)
    locale, offsets, _ = LOCALES[sample_cdf(np.cumsum(shares) / shares.sum(), rng)]
    return locale, offsets[int(rng.integers(len(offsets)))]


def _device_types(rng: np.random.Generator) -> list[str]:
    """1-3 distinct device types: a speaker or display first, then others."""
    count = 1 + sample_cdf(np.array([0.45, 0.8, 1.0]), rng)
    types = ["speaker" if rng.random() < 0.72 else "display"]
    while len(types) < count:
        remaining = [t for t in DEVICE_TYPES if t not in types]
        weights = np.array([EXTRA_DEVICE_SHARE[t] for t in remaining], dtype=np.float64)
        types.append(remaining[sample_cdf(np.cumsum(weights) / weights.sum(), rng)])
    return types


def _favourites(world: World, rng: np.random.Generator) -> tuple[tuple[Request, ...], np.ndarray]:
    """3-8 requests the household repeats: mostly popular ones, some from the long tail."""
    count = int(rng.integers(3, 9))
    chosen: list[Request] = []
    seen: dict[tuple[str, str], bool] = {}
    for _ in range(count * 3):
        if len(chosen) >= count:
            break
        if rng.random() < 0.65:
            request = world.draw_catalog(rng)
        else:
            request = world.catalog[int(rng.integers(len(world.catalog)))]
        key = (request.intent, request.text())
        if key not in seen:
            seen[key] = True
            chosen.append(request)
    weights = 1.0 / np.arange(1, len(chosen) + 1, dtype=np.float64)
    return tuple(chosen), np.cumsum(weights) / weights.sum()


def make_household(index: int, world: World, rng: np.random.Generator) -> Household:
    """Draw household ``index`` from its own random stream.

    Why the index in the ids: ids stay unique without any cross-user bookkeeping.
    """
    user_id = f"hh-{rng.bytes(5).hex()}{index:04x}"
    locale, offset = _pick_locale(rng)
    devices: list[Device] = []
    for number, device_type in enumerate(_device_types(rng)):
        reports_utc = rng.random() < 0.45
        app_version = APP_VERSIONS[int(rng.integers(len(APP_VERSIONS)))] if rng.random() < 0.25 else None
        devices.append(
            Device(
                device_id=f"dev-{rng.bytes(6).hex()}-{index:x}{number}",
                device_type=device_type,
                ts_offset_min=None if reports_utc else offset,
                app_version=app_version,
            )
        )
    sigma = 0.6
    activity = float(np.exp(rng.normal(-0.5 * sigma * sigma, sigma)))
    favourites, favourite_cdf = _favourites(world, rng)
    return Household(
        index=index,
        user_id=user_id,
        locale=locale,
        tz_offset_min=offset,
        devices=tuple(devices),
        activity=activity,
        favourites=favourites,
        favourite_cdf=favourite_cdf,
        favourite_share=float(rng.uniform(0.25, 0.55)),
    )


def pick_request(household: Household, world: World, rng: np.random.Generator) -> Request:
    """What the household asks for next: a favourite or a popular request."""
    if rng.random() < household.favourite_share:
        return household.favourites[sample_cdf(household.favourite_cdf, rng)]
    return world.draw_catalog(rng)
