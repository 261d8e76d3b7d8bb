#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay, for `make bench` (issue 18).

Why: a real S3 bucket answers in 10-50 ms per request, while the benchmark's server
(`rclone serve s3`) is on loopback; these machines' kernels have no `netem`, so the delay lives
in user space. Every chunk read from one side is written to the other side DELAY after it was
read, in order, and reading never waits for writing: the delay adds latency, it does not cap
bandwidth (beyond what this process can copy, which the benchmark reports as "no delay" through
the same proxy).

Usage: delay-proxy.py UPSTREAM_PORT DELAY_MS [PORT_FILE]
Listens on 127.0.0.1, a free port, forwards to 127.0.0.1:UPSTREAM_PORT; prints the port on
stdout (and writes it to PORT_FILE); runs until killed (SIGTERM).
"""
import asyncio
import signal
import sys


async def pump(reader, writer, delay):
    """Copies reader to writer, each chunk `delay` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(262144)
                queue.put_nowait((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            queue.put_nowait((loop.time() + delay, b""))

    reading = asyncio.ensure_future(read())
    try:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()


async def handle(client_reader, client_writer, upstream_port, delay):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_writer.close()
        return
    # The connection itself (SYN/SYN-ACK) also costs one round trip on a real network.
    await asyncio.sleep(2 * delay)
    await asyncio.gather(
        pump(client_reader, up_writer, delay), pump(up_reader, client_writer, delay)
    )
    for w in (client_writer, up_writer):
        w.close()


async def main(argv):
    upstream_port, delay = int(argv[1]), float(argv[2]) / 1000.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream_port, delay), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    if len(argv) > 3:
        with open(argv[3], "w") as f:
            f.write(f"{port}\n")
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv))
