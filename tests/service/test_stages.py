"""bridge.service.stages.Stages, the one wiring object for what the stages read: the service
loads it at start and its Publisher holds that same object, so the stages run in threads
(no worker processes) use what was loaded, not a second copy."""

from __future__ import annotations

import logging

from bridge import certs
from bridge.cda.validate import no_rules_message
from bridge.gateway.client import GatewayClient
from bridge.publish.context import PublishingService
from bridge.publish.pipeline import Publisher
from bridge.service.context import ServiceContext
from bridge.service.stages import Stages


def test_load_reads_the_whole_bundle_and_says_validation_is_off(test_config, caplog):
    certs.ensure_development_certificates(test_config)
    with caplog.at_level(logging.INFO, logger="bridge.service.stages"):
        stages = Stages(test_config).load()
    assert stages.rules is None
    assert no_rules_message(test_config.validation.rules_dir) in caplog.text
    assert {"routing", "mappings", "env", "rules", "signer"} <= set(vars(stages))   # loaded, not on first use
    assert stages.env.get_template("lab.xml.j2") is not None


def test_the_publisher_holds_the_services_own_stages(test_config):
    from twisted.internet import reactor

    ctx = ServiceContext(config=test_config, reactor=reactor)
    assert isinstance(ctx.stages, Stages) and ctx.stages.config is test_config
    service = PublishingService(ctx)
    service.startService()
    try:
        publisher = ctx.publisher
        assert isinstance(publisher, Publisher) and isinstance(publisher.client, GatewayClient)
        assert publisher.stages is ctx.stages
        assert publisher.config is test_config and publisher.rules is None
    finally:
        service.stopService()
