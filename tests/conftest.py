"""The test tree: unit/ (in-process, seconds), integration/ (the `mnist` command and other
subprocess runs), system/ (DDP, servers, real MNIST, the browser). Shared helpers are the package
`support`; its fixtures come in as a plugin."""

pytest_plugins = ["support.plugin"]
