"""Everything the pipeline needs, loaded once at start, and the embedded gateway.

interface.md, "Install and run": the embedded default runs the gateway
simulator on loopback (mutual TLS with the generated development PKI),
generates development certificates on first start, and says loudly when no
validation rules are installed. :class:`PublishingService` does this when the
service starts and puts the :class:`~bridge.publish.pipeline.Publisher` on the
service context; it stops the gateway client and the simulator on stop.
"""

from __future__ import annotations

import dataclasses
import logging

from twisted.application import service
from twisted.internet import defer

from bridge import certs
from bridge.aio import as_deferred
from bridge.errors import GatewayUnavailable
from bridge.gateway.client import GatewayClient, reactor_sleep
from bridge.publish.pipeline import Publisher
from bridge.service.context import ServiceContext
from bridge.simulator.server import start_simulator

log = logging.getLogger(__name__)

#: Where the running service writes the embedded gateway's URL, for the CLI.
GATEWAY_URL_FILE = "gateway.url"


def gateway_url(config) -> str:
    """The gateway's base URL: configured, or the running service's embedded simulator."""
    if not config.embedded_gateway:
        return config.gateway.base_url
    path = config.state_dir / GATEWAY_URL_FILE
    try:
        return path.read_text().strip()
    except OSError:
        raise GatewayUnavailable(f"the embedded gateway runs inside `fse-bridge serve`: start it first "
                                 f"(no {path})") from None


def embedded_simulator_config(config, pki: certs.DevPki):
    """The configuration the embedded simulator runs with: mutual TLS with the development PKI."""
    sim = config.simulator
    if sim.tls_cert is None:
        sim = dataclasses.replace(sim, tls_cert=pki.server_cert, tls_key=pki.server_key,
                                  tls_client_ca=pki.ca_cert)
    return dataclasses.replace(config, simulator=sim)


class PublishingService(service.Service):
    """Builds the Publisher (and the embedded simulator) on start; closes them on stop."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.simulator = None

    def startService(self):
        super().startService()
        config = self.ctx.config
        reactor = self.ctx.reactor
        pki = certs.ensure_development_certificates(config)
        if pki is not None:
            log.info("development certificates in %s", pki.ca_cert.parent)
        stages = self.ctx.stages.load()
        _, sign = certs.load_credentials(config)
        base_url = None
        if config.embedded_gateway:
            if pki is None:
                pki = certs.development_pki_paths(config)
            self.simulator = start_simulator(embedded_simulator_config(config, pki), reactor,
                                             rules=stages.rules or False)
            base_url = self.simulator.url
            url_file = config.state_dir / GATEWAY_URL_FILE
            url_file.parent.mkdir(parents=True, exist_ok=True)
            url_file.write_text(base_url + "\n")
            log.info("embedded gateway simulator at %s (registry %s)", base_url, config.simulator.registry)
        client = GatewayClient.from_config(config, sleep=reactor_sleep(reactor), base_url=base_url,
                                           sign_credential=sign)
        self.ctx.publisher = Publisher(stages=stages, client=client)
        log.info("gateway %s as %s", base_url or config.gateway.base_url, sign.cn)

    def stopService(self):
        super().stopService()
        publisher = getattr(self.ctx, "publisher", None)
        d = defer.succeed(None)
        if publisher is not None:
            d = as_deferred(publisher.client.aclose())
        if self.simulator is not None:
            d.addBoth(lambda _: self.simulator.stop())
        return d
