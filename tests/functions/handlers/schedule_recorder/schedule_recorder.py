"""A scheduled function that leaves one file per invocation in RECORD_DIR.

Each file holds the occurrence (the EventBridge Scheduler event's `time`), the event id and the
gateway that ran it (GATEWAY_NODE, from the function's `env`, which differs per gateway). The file
name is unique per invocation, so an occurrence run twice leaves two files.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    record = {
        "time": event["time"],
        "id": event["id"],
        "detail_type": event["detail-type"],
        "gateway": os.environ["GATEWAY_NODE"],
        "request_id": context.aws_request_id,
    }
    folder = os.environ["RECORD_DIR"]
    name = os.path.join(folder, f"{uuid.uuid4().hex}.json")
    with open(name + ".part", "w") as f:
        json.dump(record, f)
    os.rename(name + ".part", name)  # readers never see half a file
    return record
