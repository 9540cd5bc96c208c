"""The operator's console: a web page served by ``edgefleet serve`` itself, at ``/console``.

Every asset is a file of this package (``static/``: HTML, CSS and plain
JavaScript modules; no build step, nothing from the internet), so a plant
network without internet access gets the whole console. The page and its
assets carry no data and need no token; the page asks for one, keeps it in
the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` on
every API call, so each read and each command goes through the same tokens,
roles and audit trail as the CLI's.

Layout: ``assets.py`` (the files, served with ETags; the public paths),
``figures.py`` (health, versions a device ran, telemetry series: pure),
``plan_view.py`` (a rollout's plan as the rollout page shows it: pure),
``signatures.py`` (the release signature of each bundle, checked with
python-tuf), ``page_cache.py`` (one build of a page per change, shared by
every open console). The JSON reads the API lacked are
:mod:`fleet_server.api.console_routes`, over
:mod:`fleet_server.registry.console_views`.
"""
