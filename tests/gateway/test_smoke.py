import pytest_twisted

from gateway_kit import aio, doc_id, submission


@pytest_twisted.ensureDeferred
async def test_create_smoke(client, simulator, package):
    result = await aio(client.create(submission(), package))
    print(result)
    assert result.status == 202, result.problem
