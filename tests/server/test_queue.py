"""A burst beyond the queue: the excess gets 429 with Retry-After at once, the rest get their images."""

from __future__ import annotations

import concurrent.futures
import threading

import httpx
import openai

from .conftest import QUEUE_SIZE
from .helpers import image_of


def test_burst_beyond_the_queue_gets_429s_and_correct_images(client, server_url):
    burst = 4 * QUEUE_SIZE
    barrier = threading.Barrier(burst)

    def one(i: int):
        barrier.wait()
        try:
            r = client.images.generate(prompt=f"{i} red circles", n=2, size="256x256", response_format="b64_json")
            return [image_of(d).size for d in r.data]
        except openai.RateLimitError as e:
            return e

    with concurrent.futures.ThreadPoolExecutor(burst) as pool:
        results = list(pool.map(one, range(burst)))
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    served = [r for r in results if not isinstance(r, openai.RateLimitError)]
    assert len(served) >= QUEUE_SIZE and len(refused) >= 1, results
    for err in refused:
        assert err.status_code == 429 and err.code == "rate_limit_exceeded"
        assert int(err.response.headers["retry-after"]) > 0
    assert all(sizes == [(256, 256), (256, 256)] for sizes in served)
    # The slots are free again afterwards.
    stats = httpx.get(f"{server_url}/health").json()["queue"]
    assert stats["admitted"] == 0 and stats["alive"]
