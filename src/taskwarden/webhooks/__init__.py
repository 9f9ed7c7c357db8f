"""Webhooks: a signed POST when a watch reaches a final state, retried until delivered.

:mod:`.sender` signs and sends deliveries; :mod:`.outbox` turns final events into deliveries and
hands due ones to the ``taskwarden.webhook`` task.
"""

from taskwarden.webhooks.outbox import pump
from taskwarden.webhooks.sender import Sender, refusal, sign, url_policy, verify

__all__ = ["Sender", "pump", "refusal", "sign", "url_policy", "verify"]
