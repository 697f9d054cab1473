"""cancel_and_wait: a task that swallows a cancellation (as redis-py sometimes does) still stops."""

from __future__ import annotations

import asyncio

import pytest

from gateway.tasks import cancel_and_wait


def test_a_task_that_ignores_the_first_cancellation_is_cancelled_again() -> None:
    async def main() -> int:
        swallowed = 0

        async def stubborn() -> None:
            nonlocal swallowed
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    if swallowed < 2:
                        swallowed += 1
                        continue  # what a library catching CancelledError mid-command does
                    raise

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task), timeout=5)
        assert task.cancelled()
        return swallowed

    assert asyncio.run(main()) == 2


def test_an_error_the_task_ends_with_is_logged_not_raised(capfd: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async def failing() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise RuntimeError("cleanup failed") from None

        task = asyncio.create_task(failing(), name="the-loop")
        await asyncio.sleep(0)
        await cancel_and_wait(task)

    asyncio.run(main())
    err = capfd.readouterr().err
    assert "a background task ended with an error" in err and "the-loop" in err and "cleanup failed" in err


def test_a_finished_task_returns_at_once() -> None:
    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        await task
        await cancel_and_wait(task)
        assert not task.cancelled()

    asyncio.run(main())
