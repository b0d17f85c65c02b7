"""The service's one ``Lifewatch``, shared by the app and its migration scripts."""

from __future__ import annotations

import os

from lifewatch import Lifewatch

watch = Lifewatch(
    service="orders",
    timeline_path="/lifewatch/timeline",
    drain_delay=float(os.environ.get("ORDERS_DRAIN_DELAY", "5")),
)
