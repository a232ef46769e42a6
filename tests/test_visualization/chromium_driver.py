"""Headless Chromium driven through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages ending in NUL on file
descriptors 3 and 4). Standard library only, no network port."""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from typing import Optional

CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome')


def find_chromium() -> Optional[str]:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium() -> str:
    """The Chromium executable; installs Debian's ``chromium`` package with
    apt-get when it is missing. Raises ``RuntimeError`` with apt's output
    when that fails."""
    path = find_chromium()
    if path:
        return path
    sudo = [] if os.geteuid() == 0 else ['sudo', '-n']
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    logs = []
    for cmd in (['apt-get', 'update'],
                ['apt-get', 'install', '-y', '--no-install-recommends',
                 'chromium']):
        try:
            proc = subprocess.run(sudo + cmd, env=env, capture_output=True,
                                  text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f'{" ".join(sudo + cmd)} failed: {e}')
        logs.append(proc.stdout[-2000:] + proc.stderr[-2000:])
        if proc.returncode != 0:
            raise RuntimeError(f'{" ".join(sudo + cmd)} exited with '
                               f'{proc.returncode}:\n{logs[-1]}')
    path = find_chromium()
    if not path:
        raise RuntimeError('chromium was installed but is not on PATH:\n' +
                           '\n'.join(logs))
    return path


class Browser:
    """One headless Chromium with one page (a DevTools session)."""

    def __init__(self, exe: str, user_dir: str, width: int = 1200,
                 height: int = 1600, timeout: float = 60.0):
        self.timeout = timeout
        cmd_r, self._cmd_w = os.pipe()  # we write, Chromium reads fd 3
        self._res_r, res_w = os.pipe()  # Chromium writes fd 4, we read

        def fds():  # runs in the child before exec: the pipes on fds 3, 4
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, '--headless', '--no-sandbox', '--disable-gpu',
             '--disable-dev-shm-usage', '--no-first-run',
             '--disable-extensions', '--hide-scrollbars',
             '--force-device-scale-factor=1', '--remote-debugging-pipe',
             f'--user-data-dir={user_dir}', f'--window-size={width},{height}',
             'about:blank'],
            preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b''
        self._id = 0
        self.events = []
        self.session = None
        target = self.send('Target.createTarget', url='about:blank')
        self.session = self.send('Target.attachToTarget',
                                 targetId=target['targetId'],
                                 flatten=True, session=False)['sessionId']
        self.send('Page.enable')
        self.send('Runtime.enable')
        self.send('Emulation.setDeviceMetricsOverride', width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    # -- protocol --------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b'\0' not in self._buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self._res_r], [], [],
                                              left)[0]:
                raise TimeoutError('no answer from Chromium')
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f'Chromium exited ({self.proc.poll()})')
            self._buf += chunk
        msg, self._buf = self._buf.split(b'\0', 1)
        return json.loads(msg)

    def send(self, method: str, session: bool = True, **params) -> dict:
        """Send a command, wait for its result (events are kept)."""
        self._id += 1
        msg = dict(id=self._id, method=method, params=params)
        if session and self.session:
            msg['sessionId'] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b'\0')
        deadline = time.time() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get('id') == self._id:
                if 'error' in m:
                    raise RuntimeError(f'{method}: {m["error"]}')
                return m.get('result', {})
            self.events.append(m)

    def wait_event(self, method: str) -> dict:
        deadline = time.time() + self.timeout
        while True:
            for i, m in enumerate(self.events):
                if m.get('method') == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    # -- page ------------------------------------------------------------
    def goto(self, url: str) -> None:
        """Load ``url`` afresh (also when only its fragment differs from
        the current page's) and wait for its load event."""
        for u in ('about:blank', url):
            self.events.clear()
            self.send('Page.navigate', url=u)
            self.wait_event('Page.loadEventFired')

    def js(self, expression: str):
        """Value of a JavaScript expression (promises are awaited)."""
        r = self.send('Runtime.evaluate', expression=expression,
                      returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r:
            raise RuntimeError(f'{expression}: {r["exceptionDetails"]}')
        return r['result'].get('value')

    def wait_js(self, expression: str, timeout: Optional[float] = None):
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.time() + (timeout or self.timeout)
        while time.time() < deadline:
            v = self.js(expression)
            if v:
                return v
            time.sleep(0.1)
        raise TimeoutError(f'still false after waiting: {expression}')

    def click(self, x: float, y: float) -> None:
        """A real left click at viewport coordinates (CSS pixels)."""
        for kind in ('mouseMoved', 'mousePressed', 'mouseReleased'):
            self.send('Input.dispatchMouseEvent', type=kind, x=x, y=y,
                      button='left', clickCount=1)

    def screenshot(self) -> bytes:
        """PNG of the viewport."""
        return base64.b64decode(
            self.send('Page.captureScreenshot', format='png')['data'])

    def close(self) -> None:
        try:
            self.send('Browser.close', session=False)
        except Exception:  # noqa: BLE001  (already gone)
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._res_r)
