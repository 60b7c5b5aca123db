def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds or boots a throwaway Debian root or a container "
                            "(minutes without the cache in $EDGE_CI_CACHE, seconds with it)")
