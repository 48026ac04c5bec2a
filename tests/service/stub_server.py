"""The service of `fse-bridge serve` with the document pipeline replaced by a stub answering AA.

End-to-end tests of the listener, the journal and the ACK contract run this, so
that their answers do not depend on what the document pipeline decides.
Usage: python stub_server.py --config FILE
"""

import argparse
import logging
import sys
from pathlib import Path


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from bridge.service.tap import install_asyncio_reactor
    reactor = install_asyncio_reactor()
    from twisted.internet import defer

    from bridge import config
    from bridge.model import AckCode
    from bridge.outcome import Outcome
    from bridge.mapping.analysis import unsupported
    from bridge.service.tap import makeService

    held = []   # patients named SLOW: answered only once the service is stopping

    def release_held():
        logging.getLogger("stub").info("stopping: %d held message(s) answered", len(held))
        while held:
            held.pop(0).callback(None)

    def stub(ctx, entry, analysis):
        # The service's own routing (AR 200/201 for other types), then AA instead of the pipeline.
        refused = unsupported(analysis)
        outcome = Outcome.from_error(refused) if refused else Outcome(code=AckCode.AA, text="received")
        if b"|SLOW^" in entry.raw:
            # Work in flight when a test stops the service, however long the stop takes to come.
            logging.getLogger("stub").info("holding %s until the stop", entry.msh10)
            held.append(defer.Deferred())
            return held[-1].addCallback(lambda _: outcome)
        return defer.succeed(outcome)

    top = makeService(config.load(args.config), reactor, handler=stub)
    reactor.callWhenRunning(top.startService)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.addSystemEventTrigger("before", "shutdown", release_held)   # after the stop has begun
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
