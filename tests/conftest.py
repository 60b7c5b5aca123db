pytest_plugins = ["edge.testing.pytest_plugin"]
