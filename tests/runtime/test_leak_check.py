"""The autouse leak check itself: a test that leaves a thread or a child behind fails."""

pytest_plugins = ["pytester"]


def test_leaked_thread_and_child_process_fail_the_test(pytester):
    pytester.makeconftest('pytest_plugins = ["edge.testing.pytest_plugin"]')
    pytester.makepyfile(test_leaky='''
import subprocess, sys, threading

stop = threading.Event()

def test_leaks_a_thread():
    threading.Thread(target=stop.wait, name="leaky-thread", daemon=True).start()

def test_leaks_a_child():
    test_leaks_a_child.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

def test_clean():
    stop.set()
    test_leaks_a_child.proc.kill()
    test_leaks_a_child.proc.wait()
''')
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*test_leaks_a_thread leaked threads: leaky-thread*",
                                 "*test_leaks_a_child leaked child processes: *"])
