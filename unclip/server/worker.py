"""One thread owns the pipeline; requests wait for it in a bounded queue.

Admission is counted, not queued: at most `capacity` requests holding at most `capacity_images` images
are waiting or running at once, at most `per_client` of them from one API key (or client address), and
the next one is refused at once (the app answers 429 with Retry-After) instead of piling up. A request is
admitted (``admit`` gives a Ticket) before its uploads are decoded, so a burst of large uploads is refused
before it costs memory; the ticket is handed to ``submit`` and released when the job ends. The worker
takes the oldest job and, for text-to-image, folds every queued generation of the same size into the
same pipeline call while the batch holds at most `max_batch_images` images — per-sample RNG makes a
batched image the same as an unbatched one. Edits and variations run one request per call (each has its
own image). A batch that fails on one request's input is rerun request by request, so one bad prompt
never fails its neighbours.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Any

import torch
from PIL import Image

log = logging.getLogger("unclip.server")


class QueueFull(Exception):
    pass


class Cancelled(Exception):
    """Raised from the pipeline's progress callback once every request of a batch has timed out."""


@dataclasses.dataclass(eq=False)
class Job:
    kind: str  # "generate" | "edit" | "variation"
    n: int
    size: int  # the side the pipeline produces (the app resizes to the requested one afterwards)
    prompt: str | None = None
    image: Image.Image | None = None
    mask: Image.Image | None = None
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)
    abandoned: bool = False  # set by the app when the request timed out; a queued job is then skipped

    def abandon(self) -> None:
        self.abandoned = True
        self.future.cancel()  # succeeds only while still queued: frees the slot at once


@dataclasses.dataclass
class JobOutput:
    """A job's images (pipeline size) and, per image, the output filter's category (None: not flagged)."""
    images: list[Image.Image]
    flagged: list[str | None]


class Ticket:
    """One admitted request: `n` images for `client`. Released exactly once (by its job's end, or by the app
    when the request fails before it is submitted)."""

    def __init__(self, worker: Worker, n: int, client: str) -> None:
        self.worker, self.n, self.client, self.released, self.submitted = worker, n, client, False, False

    def release(self, *_args) -> None:
        self.worker._release(self)


class Worker:
    def __init__(self, pipeline: Any, capacity: int, max_batch_images: int, capacity_images: int | None = None,
                 per_client: int | None = None) -> None:
        self.pipeline, self.capacity, self.max_batch_images = pipeline, capacity, max_batch_images
        self.capacity_images, self.per_client = capacity_images, per_client
        self._jobs: collections.deque[Job] = collections.deque()
        self._admitted = 0  # queued + running requests
        self._admitted_images = 0
        self._by_client: collections.Counter[str] = collections.Counter()
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="unclip-pipeline-worker", daemon=True)
        self.batches_run = 0  # pipeline calls made (for /health and tests)
        self.images_made = 0

    # -- called from the event loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._stop = True
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()
            self._cv.notify_all()
        self._thread.join(timeout)

    def admit(self, n: int, client: str = "") -> Ticket:
        """Reserve room for a request of `n` images from `client`, or raise QueueFull saying which limit."""
        with self._cv:
            if self._stop:
                raise QueueFull("the server is shutting down")
            if self._admitted >= self.capacity:
                raise QueueFull(f"{self._admitted} requests are already queued or running (limit {self.capacity})")
            if self.capacity_images is not None and self._admitted and \
                    self._admitted_images + n > self.capacity_images:  # an empty queue takes any request
                raise QueueFull(f"{self._admitted_images} images are already queued or running and this request "
                                f"asks for {n} (limit {self.capacity_images})")
            if self.per_client is not None and self._by_client[client] >= self.per_client:
                raise QueueFull(f"this API key already has {self._by_client[client]} requests queued or running "
                                f"(limit {self.per_client} per key)")
            self._admitted += 1
            self._admitted_images += n
            self._by_client[client] += 1
            return Ticket(self, n, client)

    def submit(self, job: Job, ticket: Ticket | None = None) -> concurrent.futures.Future:
        """Queue `job` (admitted by `ticket`, else admitted now: QueueFull when full); the future resolves to
        the job's JobOutput. The ticket is released when the job ends, however it ends."""
        ticket = ticket or self.admit(job.n)
        with self._cv:
            if self._stop:
                self._release_locked(ticket)
                raise QueueFull("the server is shutting down")
            self._jobs.append(job)
            ticket.submitted = True
            self._cv.notify()
        job.future.add_done_callback(ticket.release)  # a cancelled (timed-out) job frees its slot at once
        return job.future

    def _release(self, ticket: Ticket) -> None:
        with self._cv:
            self._release_locked(ticket)

    def _release_locked(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        self._admitted -= 1
        self._admitted_images -= ticket.n
        self._by_client[ticket.client] -= 1
        if self._by_client[ticket.client] <= 0:
            del self._by_client[ticket.client]

    def stats(self) -> dict:
        with self._cv:
            return {"admitted": self._admitted, "admitted_images": self._admitted_images, "queued": len(self._jobs),
                    "capacity": self.capacity, "capacity_images": self.capacity_images,
                    "batches_run": self.batches_run, "images_made": self.images_made,
                    "alive": self._thread.is_alive()}

    # -- the worker thread ---------------------------------------------------------------------------------
    def _next_batch(self) -> list[Job] | None:
        with self._cv:
            while not self._jobs and not self._stop:
                self._cv.wait()
            if self._stop:
                return None
            batch = [self._jobs.popleft()]
            if batch[0].kind == "generate":
                images = batch[0].n
                for job in list(self._jobs):
                    if job.kind == "generate" and job.size == batch[0].size and images + job.n <= self.max_batch_images:
                        self._jobs.remove(job)
                        batch.append(job)
                        images += job.n
        # A job whose request already timed out is dropped here; the others are marked running.
        return [job for job in batch if job.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            per_job = self._call(batch)
        except Exception as e:  # noqa: BLE001 — every failure is handed to the requests, never kills the worker
            if len(batch) > 1 and not isinstance(e, Cancelled):
                for job in batch:  # isolate the request whose input failed
                    self._run([job])
                return
            for job in batch:
                job.future.set_exception(e)
            return
        self.batches_run += 1
        self.images_made += sum(len(o.images) for o in per_job)
        log.debug("pipeline call: %d request(s), %d image(s), %.2fs", len(batch),
                  sum(len(o.images) for o in per_job), time.perf_counter() - t0)
        for job, images in zip(batch, per_job):
            job.future.set_result(images)

    def _abort_if_abandoned(self, batch: list[Job]):
        def callback(*_args, **_kwargs):
            if all(job.abandoned for job in batch):
                raise Cancelled("every request of this batch has timed out")
        return callback

    def _call(self, batch: list[Job]) -> list[JobOutput]:
        pipe, first = self.pipeline, batch[0]
        callback = self._abort_if_abandoned(batch)
        with torch.inference_mode():
            if first.kind == "generate":
                prompts = [job.prompt for job in batch for _ in range(job.n)]
                result = pipe.generate(prompts, n=1, size=first.size, callback=callback)
            elif first.kind == "edit":
                result = pipe.edit(first.image, first.mask, first.prompt, n=first.n, size=first.size, callback=callback)
            elif first.kind == "variation":
                result = pipe.variations(first.image, n=first.n, size=first.size, callback=callback)
            else:
                raise ValueError(f"unknown job kind {first.kind!r}")
        flags = list(getattr(result, "flagged", None) or [None] * len(result.images))
        if any(flags):  # the output filter flagged these (the app withholds them and says so)
            log.warning("output moderation flagged %d of %d image(s): %s", sum(map(bool, flags)), len(flags),
                        sorted({c for c in flags if c}))
        out, i = [], 0
        for job in batch:  # prompt-major: each request's images are contiguous
            out.append(JobOutput(result.images[i:i + job.n], flags[i:i + job.n]))
            i += job.n
        return out
