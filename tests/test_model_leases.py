"""Pooled model instances always go back to their pool when the node that leased one is
closed: whatever its close() does, and wherever a cancel lands in its bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest

from remotemedia_nodes import models, registry
from remotemedia_nodes.builtin.recognition import POCKETSPHINX, SpeechRecognition

COUNTER = models.register(models.Model(name="test-lease-counter", load=lambda: object(), pooled=True, pool_size=1))


class LeasesAndFailsToClose:
    """Takes a lease in process() and keeps it; its close() fails before returning it."""

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.lease = models.host.lease(COUNTER, node_type="Test")
        return {}

    def close(self) -> None:
        raise RuntimeError("close() failed before releasing its lease")


def test_a_lease_comes_back_when_the_nodes_close_fails() -> None:
    node = LeasesAndFailsToClose()
    registry.call(node, "process", {})
    assert models.host.try_lease(COUNTER, node_type="Test") is None, "the only instance is leased"
    with pytest.raises(RuntimeError, match="close\\(\\) failed"):
        registry.close(node)
    again = models.host.try_lease(COUNTER, node_type="Test")
    assert again is not None, "the instance went back to the pool"
    again.release()


def test_a_lease_taken_outside_a_node_call_is_not_tracked() -> None:
    lease = models.host.lease(COUNTER, node_type="Test")
    registry.close(object())  # closing some other node returns nothing of this lease
    assert models.host.try_lease(COUNTER, node_type="Test") is None
    lease.release()


def test_the_recogniser_goes_back_when_a_cancel_landed_after_the_utterance_ended() -> None:
    # The state a cancel leaves when it lands between decoder.end_utt() and the node's flag:
    # the flag still says the utterance is open. Ending it again raises inside pocketsphinx;
    # the lease must come back all the same, and the next lessee gets a working decoder.
    node = SpeechRecognition()
    with models.host.calling(node):
        node.lease = models.host.lease(POCKETSPHINX, node.settings, node_type="SpeechRecognitionNode")
    decoder = node.lease.instance
    decoder.start_utt()
    decoder.end_utt()
    node.in_utterance = True
    registry.close(node)
    assert node.lease is None and not node.in_utterance
    lease = models.host.try_lease(POCKETSPHINX, node.settings, node_type="SpeechRecognitionNode")
    assert lease is not None, "the recogniser went back to the pool"
    lease.instance.start_utt()
    lease.instance.end_utt()
    lease.release()
