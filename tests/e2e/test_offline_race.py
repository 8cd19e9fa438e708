"""A message that reaches offline storage at the very moment its recipient
comes online is delivered at once, not at the next login (the store's write
may land after the login's flush read the store)."""

from __future__ import annotations

import asyncio

from harness import jid_of
from harness.client import Client
from harness.scenarios import logged_in

BOB = jid_of("bob")
ROUNDS = 5
BURST = 60


async def test_messages_stored_while_the_recipient_logs_in_arrive_without_a_new_login_regression(server):
    async with logged_in(server, "alice") as (alice,):
        for round_ in range(ROUNDS):
            bob = Client(server, "bob", resource=f"r{round_}")
            await bob.login()
            try:
                bodies = [f"round {round_} message {i}" for i in range(BURST)]

                async def burst(bodies: list[str]) -> None:
                    for i, body in enumerate(bodies):
                        alice.send_message(BOB, body)
                        if i % 10 == 0:
                            await asyncio.sleep(0)

                # Initial presence lands in the middle of the burst: some
                # messages go to storage, some straight to the session.
                await asyncio.gather(burst(bodies), bob.go_online())
                for body in bodies:
                    await bob.next_message(jid_of("alice"), body, timeout=10)
            finally:
                await bob.close()
