"""The broker reference: what RabbitMQ and aio-pika alone do on this machine.

`python -m bench.reference_broker AMQP_URL QUEUE` is the responder, run in its own process
(as conveyor's worker is): it consumes requests from a quorum queue, publishes a reply to
each request's `reply_to` with a publisher confirm, and acks the request only after the
confirm — the minimum a command worker does per command, with no store and no logic.
The driver functions below (run in the bench process) publish the requests and time the
replies: a closed loop with N in flight (throughput) or an open loop at a fixed rate
(latency). `pipelined_publish` is the gateway's reference: confirmed publishes of given
bodies with a window of confirms outstanding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

REQUEST_BODY = (
    b'{"type":"AddItem","command_id":"00000000-0000-0000-0000-000000000000",'
    b'"order_id":"bench-reference","sku":"BOOK","quantity":2,"unit_price":"9.99"}'
)


async def declare_request_queue(channel: aio_pika.abc.AbstractChannel, name: str) -> None:
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})


async def respond(url: str, queue_name: str, prefetch: int) -> None:
    connection = await aio_pika.connect(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        await declare_request_queue(channel, queue_name)
        queue = await channel.get_queue(queue_name)

        async def on_request(message: AbstractIncomingMessage) -> None:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    correlation_id=message.correlation_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=message.reply_to or "",
            )
            await message.ack()

        await queue.consume(on_request)
        print("ready", flush=True)
        await stop.wait()


@dataclass
class RoundTrips:
    seconds: float
    latencies_ms: list[float]


class Requester:
    """Publishes requests to the responder's queue and matches the replies."""

    def __init__(self, url: str, queue_name: str) -> None:
        self.url = url
        self.queue_name = queue_name
        self._sent: dict[str, float] = {}
        self._replied: asyncio.Queue[float] = asyncio.Queue()

    async def __aenter__(self) -> Requester:
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await declare_request_queue(self.channel, self.queue_name)
        self.replies = await self.channel.declare_queue(exclusive=True)
        await self.replies.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        sent = self._sent.pop(message.correlation_id or "", None)
        if sent is not None:
            self._replied.put_nowait((time.perf_counter() - sent) * 1000)

    async def send(self, key: str) -> None:
        self._sent[key] = time.perf_counter()
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                REQUEST_BODY,
                correlation_id=key,
                reply_to=self.replies.name,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.queue_name,
        )

    async def closed_loop(self, count: int, in_flight: int) -> RoundTrips:
        """`count` round trips, `in_flight` outstanding at any time."""
        latencies: list[float] = []
        sending: set[asyncio.Task[None]] = set()

        def send_next(n: int) -> None:
            # Each publish awaits its own confirm; the loop must not wait for it.
            task = asyncio.create_task(self.send(f"c{n}"))
            sending.add(task)
            task.add_done_callback(sending.discard)

        started = time.perf_counter()
        sent = 0
        for _ in range(min(in_flight, count)):
            send_next(sent)
            sent += 1
        while len(latencies) < count:
            latencies.append(await asyncio.wait_for(self._replied.get(), 60))
            if sent < count:
                send_next(sent)
                sent += 1
        return RoundTrips(time.perf_counter() - started, latencies)

    async def open_loop(self, rate: float, seconds: float) -> RoundTrips:
        """Requests at a steady `rate` per second for `seconds`, each timed to its reply."""
        count = max(1, round(rate * seconds))
        latencies: list[float] = []
        started = time.perf_counter()

        async def collect() -> None:
            while len(latencies) < count:
                latencies.append(await self._replied.get())

        collector = asyncio.create_task(collect())
        sending: set[asyncio.Task[None]] = set()
        for n in range(count):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.send(f"o{n}"))
            sending.add(task)
            task.add_done_callback(sending.discard)
        await asyncio.wait_for(collector, 60)
        return RoundTrips(time.perf_counter() - started, latencies)


async def pipelined_publish(
    url: str,
    exchange_name: str,
    messages: Sequence[tuple[str, bytes, str, str]],
    window: int,
) -> float:
    """Seconds to publish (routing_key, body, message_id, type) messages to an existing
    exchange, persistent, each awaiting its confirm, `window` confirms outstanding."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)
        slots = asyncio.Semaphore(window)

        async def publish(routing_key: str, body: bytes, message_id: str, type_: str) -> None:
            try:
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        message_id=message_id,
                        type=type_,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=routing_key,
                    mandatory=False,
                )
            finally:
                slots.release()

        started = time.perf_counter()
        tasks = []
        for message in messages:
            await slots.acquire()
            tasks.append(asyncio.create_task(publish(*message)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The broker reference's responder process.")
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("--prefetch", type=int, default=200)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(respond(args.url, args.queue, args.prefetch))
    sys.exit(0)


if __name__ == "__main__":
    main()
