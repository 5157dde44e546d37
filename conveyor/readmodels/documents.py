"""Each read-model document, described once: its fields in order, which fact of the
projection's state each one shows, and how it is written as JSON text.

The live projections (conveyor/readmodels/projections.py) render their documents through
these descriptions, and so does the rebuild's fold — as dicts (`render`) or straight to the
JSON text the stores would write (`render_json`, what json.dumps with separators=(",", ":")
and ensure_ascii=False gives, built directly because a rebuild writes thousands). A field
added here appears in all three, in the same place.

The facts are read by attribute: each projection's state offers every attribute its
document names (and `line_items()` for a document with lines).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from json.encoder import encode_basestring as _quote
from typing import Any, Literal, Protocol

Body = dict[str, Any]
Kind = Literal["text", "ascii", "int", "optional_text"]
"""How a value is written: free text (JSON-escaped), ASCII known to need no escaping
(numbers as text, times, ids, statuses), an integer, or free text that may be null."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    attribute: str = ""
    """The fact it shows (default: the field's own name)."""

    def value(self, facts: Any) -> Any:
        return getattr(facts, self.attribute or self.name)


class HasLineItems(Protocol):
    status: str

    def line_items(self) -> Iterable[tuple[str, int, str, str]]:
        """(sku, quantity, unit price as text, subtotal as text) per line, in order."""
        ...


@dataclass(frozen=True, slots=True)
class LineItems:
    """An order's lines: sku, quantity, unit price (and subtotal). `pending_only`: kept only
    while the order is pending (ItemRemoved needs the remaining prices; a final order's
    lines would only take room)."""

    name: str
    subtotals: bool = False
    pending_only: bool = False

    def _items(self, facts: HasLineItems) -> Iterable[tuple[str, int, str, str]]:
        if self.pending_only and facts.status != "pending":
            return ()
        return facts.line_items()

    def value(self, facts: HasLineItems) -> list[Body]:
        if self.subtotals:
            return [
                {"sku": sku, "quantity": quantity, "unit_price": price, "subtotal": subtotal}
                for sku, quantity, price, subtotal in self._items(facts)
            ]
        return [
            {"sku": sku, "quantity": quantity, "unit_price": price}
            for sku, quantity, price, _ in self._items(facts)
        ]

    def text(self, facts: HasLineItems) -> str:
        if self.subtotals:
            items = ",".join(
                f'{{"sku":{_quote(sku)},"quantity":{quantity!r},"unit_price":"{price}",'
                f'"subtotal":"{subtotal}"}}'
                for sku, quantity, price, subtotal in self._items(facts)
            )
        else:
            items = ",".join(
                f'{{"sku":{_quote(sku)},"quantity":{quantity!r},"unit_price":"{price}"}}'
                for sku, quantity, price, _ in self._items(facts)
            )
        return f"[{items}]"


_FIELD_TEXT = {
    "int": "{{{0}!r}}",
    "ascii": '"{{{0}}}"',
    "text": "{{_quote({0})}}",
    "optional_text": '{{"null" if {0} is None else _quote({0})}}',
}


def _compile_json(fields: tuple[Field | LineItems, ...]) -> Callable[[Any], str]:
    """One f-string for the whole document, built from the description once: as fast as a
    renderer written by hand (a rebuild renders every document it writes this way)."""
    parts: list[str] = []
    scope: dict[str, Any] = {"_quote": _quote}
    for index, field in enumerate(fields):
        # names go into generated code: plain names only
        for name in (field.name, getattr(field, "attribute", "") or field.name):
            if not name.isidentifier():
                raise ValueError(f"field or attribute name {name!r} is not a plain name")
        if isinstance(field, LineItems):
            scope[f"_lines{index}"] = field.text
            value = f"{{_lines{index}(facts)}}"
        else:
            value = _FIELD_TEXT[field.kind].format(f"facts.{field.attribute or field.name}")
        parts.append(f'"{field.name}":{value}')
    source = "{{" + ",".join(parts) + "}}"
    code = f"def render_json(facts):\n    return f{source!r}\n"
    exec(compile(code, "<document description>", "exec"), scope)  # our own text, not input
    render: Callable[[Any], str] = scope["render_json"]
    return render


@dataclass(frozen=True, slots=True)
class DocumentShape:
    fields: tuple[Field | LineItems, ...]
    render_json: Callable[[Any], str] = dataclass_field(init=False, repr=False, compare=False)
    """The document as the JSON text the stores would write."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "render_json", _compile_json(self.fields))

    @property
    def lines_field(self) -> str | None:
        """Where the document keeps its lines (a projection reloads them from there)."""
        return next((f.name for f in self.fields if isinstance(f, LineItems)), None)

    def render(self, facts: Any) -> Body:
        return {field.name: field.value(facts) for field in self.fields}


ORDER_SUMMARY_DOCUMENT = DocumentShape(
    (
        Field("order_id", "text"),
        Field("customer_id", "text"),
        Field("status", "ascii"),
        LineItems("items", subtotals=True),
        Field("total", "ascii", "total_text"),
        Field("item_count", "int"),
        Field("version", "int"),
        Field("created_at", "ascii"),
        Field("updated_at", "ascii"),
        Field("cancel_reason", "optional_text"),
        Field("last_event_id", "ascii"),
    )
)
"""One per order: customer, status, items with subtotals, total, version, times."""

CUSTOMER_HISTORY_DOCUMENT = DocumentShape(
    (
        Field("customer_id", "text"),
        Field("order_id", "text"),
        Field("status", "ascii"),
        Field("total", "ascii", "total_text"),
        Field("version", "int"),
        Field("created_at", "ascii"),
        Field("updated_at", "ascii"),
        LineItems("lines", pending_only=True),
    )
)
"""One per order, indexed by customer: what a customer's answer is gathered from."""

ACTIVE_ORDERS_DOCUMENT = DocumentShape(
    (
        Field("order_id", "text"),
        Field("customer_id", "text"),
        Field("status", "ascii"),
        Field("total", "ascii", "total_text"),
        Field("item_count", "int"),
        Field("version", "int"),
        Field("created_at", "ascii"),
        Field("updated_at", "ascii"),
        LineItems("lines", pending_only=True),
    )
)
"""One per order, kept after confirm/cancel with its final status (a tombstone)."""

STOCK_LEVELS_DOCUMENT = DocumentShape(
    (
        Field("sku", "text"),
        Field("on_hand", "int"),
        Field("reserved", "int"),
        Field("available", "int"),
        Field("open_reservations", "int"),
        Field("received_total", "int"),
        Field("committed_total", "int"),
        Field("refused_total", "int"),
        Field("version", "int"),
        Field("updated_at", "ascii"),
        Field("last_event_id", "ascii"),
    )
)
"""One per SKU: on hand, reserved, available and the totals behind them."""
