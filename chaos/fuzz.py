"""Fuzzed command messages: random bytes, random JSON, wrong types, oversized bodies,
missing ids, deep nesting… Each carries the header `x-chaos-fuzz: <n>` (dead-lettering keeps
headers), so the checker can find every one of them again: in the DLQ, or — if it happened
to be a valid command — by its outcome (its command_id is `fuzz-<n>`).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from typing import Any

from chaos.load import Outgoing

FUZZ_HEADER = "x-chaos-fuzz"


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.randint(-(10**30), 10**30)
    if kind == 1:
        return rng.random() * 10 ** rng.randint(-5, 30)
    if kind == 2:
        return "".join(rng.choices(string.printable + "éß漢🙂\x00", k=rng.randint(0, 30)))
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = ["type", "order_id", "command_id", "sku", "quantity", "unit_price", "x", ""]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def _valid(n: int) -> dict[str, Any]:
    return {
        "type": "AddItem",
        "command_id": f"fuzz-{n}",
        "order_id": f"fuzz-order-{n % 13}",
        "sku": "SKU",
        "quantity": 1,
        "unit_price": "1.00",
    }


WRONG_VALUES: list[tuple[str, Any]] = [
    ("quantity", "2"),
    ("quantity", 2.5),
    ("quantity", True),
    ("quantity", None),
    ("quantity", 10**400),
    ("quantity", -1),
    ("unit_price", [1]),
    ("unit_price", "abc"),
    ("unit_price", "1e999999"),
    ("unit_price", "-0.001"),
    ("unit_price", {"amount": 1}),
    ("order_id", 5),
    ("order_id", ""),
    ("order_id", "x" * 5000),
    ("sku", None),
    ("command_id", 17),
    ("command_id", ""),
    ("type", "addItem"),
    ("type", None),
    ("extra_field", 1),
]


def fuzz_messages(count: int, *, seed: int = 11, max_bytes: int = 256 * 1024) -> list[Outgoing]:
    rng = random.Random(seed)

    def random_bytes(n: int) -> bytes:
        return rng.randbytes(rng.randint(0, 512))

    def random_json(n: int) -> bytes:
        return json.dumps(_random_json(rng)).encode()

    def wrong_type(n: int) -> bytes:
        body = _valid(n)
        name, value = rng.choice(WRONG_VALUES)
        body[name] = value
        return json.dumps(body).encode()

    def missing_ids(n: int) -> bytes:
        body = _valid(n)
        del body["command_id"]
        if rng.random() < 0.5:
            del body[rng.choice(["order_id", "sku", "quantity", "unit_price", "type"])]
        return json.dumps(body).encode()

    def oversized(n: int) -> bytes:
        body = _valid(n)
        body["sku"] = "S" * (max_bytes + rng.randint(1, 4096))
        return json.dumps(body).encode()

    def deep_nesting(n: int) -> bytes:
        depth = rng.randint(1000, min(100_000, max_bytes // 2 - 10))
        return b"[" * depth + b"]" * depth

    def not_an_object(n: int) -> bytes:
        return rng.choice([b"[]", b'"AddItem"', b"42", b"null", b"true", b'[{"type":"AddItem"}]'])

    def broken_text(n: int) -> bytes:
        valid = json.dumps(_valid(n)).encode()
        return rng.choice(
            [
                valid[: rng.randint(0, len(valid) - 1)],  # truncated
                valid.replace(b'"SKU"', b'"\xff\xfe"'),  # not UTF-8
                valid.replace(b'"1.00"', b"NaN"),
                valid.replace(b'"1.00"', b"Infinity"),
                b"\xef\xbb\xbf" + valid,  # a byte-order mark
                valid + b"garbage",
                b"",
            ]
        )

    def valid_maybe(n: int) -> bytes:  # valid commands hidden in the noise: outcomes expected
        body = _valid(n)
        if rng.random() < 0.5:
            body = {
                "type": "CreateOrder",
                "command_id": f"fuzz-{n}",
                "order_id": f"fuzz-order-{n % 13}",
                "customer_id": "fuzzer",
            }
        return json.dumps(body).encode()

    kinds: list[tuple[float, Callable[[int], bytes]]] = [
        (0.2, random_bytes),
        (0.2, random_json),
        (0.25, wrong_type),
        (0.1, missing_ids),
        (0.01, oversized),
        (0.02, deep_nesting),
        (0.07, not_an_object),
        (0.1, broken_text),
        (0.05, valid_maybe),
    ]
    weights = [w for w, _ in kinds]
    messages = []
    for n in range(count):
        (kind,) = rng.choices([k for _, k in kinds], weights)
        body = kind(n)
        messages.append(
            Outgoing(
                key=f"fuzz-{n}",
                body=body,
                headers={FUZZ_HEADER: n},
                # sometimes no content type, or a wrong one
                content_type=rng.choice(["application/json", None, "text/plain"]),
                # truly id-less, as from the console (aio-pika would invent a message_id)
                without_message_id=kind is missing_ids,
            )
        )
    return messages
