"""A virtual microphone for tests and benchmarks: a private PulseAudio server with a null sink.

What `paplay` plays into the null sink comes back out of its monitor, which is made the default
source, so any PortAudio program recording from the ALSA `pulse` device hears it through the real
capture path (ALSA plugin -> PortAudio -> callback). The server is private: its own socket and
runtime directory, no config files, anonymous auth, so it neither needs nor disturbs a desktop
session, and it runs as root without --system (PulseAudio only warns). The sink runs at 44.1 kHz, the
rate ALSA's `pulse` device reports, and resamples with soxr, so playback is the only conversion.

    with VirtualMicrophone(tmp_dir) as vm:
        subprocess.run([...], env=vm.env())     # clients find the server through PULSE_SERVER
        vm.play("speech.wav")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SINK = "virtual_mic"


class PulseAudioError(RuntimeError):
    pass


class VirtualMicrophone:
    def __init__(self, root: str | Path, rate: int = 44100, channels: int = 2):
        self.root = Path(root)
        self.rate, self.channels = rate, channels
        self.socket = self.root / "native"
        self.log = self.root / "pulseaudio.log"
        self.process: subprocess.Popen | None = None
        self._pacer: subprocess.Popen | None = None

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for clients: this server and no other."""
        env = dict(os.environ if base is None else base)
        env["PULSE_SERVER"] = f"unix:{self.socket}"
        env["PULSE_COOKIE"] = str(self.root / "cookie")  # anonymous auth; keeps clients out of ~/.config
        return env

    def command(self) -> list[str]:
        return [
            "pulseaudio", "-n",  # -n: no default.pa, only the modules below
            "--daemonize=no", "--use-pid-file=no", "--exit-idle-time=-1", "--disallow-exit",
            "--realtime=no", "--high-priority=no", "--resample-method=soxr-vhq",
            "--disable-shm=yes",  # containers often have a tiny /dev/shm; the socket is plenty for one stream
            "--log-level=notice", f"--log-target=file:{self.log}",
            "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            "-L", f"module-null-sink sink_name={SINK} rate={self.rate} channels={self.channels}",
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> VirtualMicrophone:
        for tool in ("pulseaudio", "pactl", "paplay"):
            if shutil.which(tool) is None:
                raise PulseAudioError(f"{tool} not found: `bash tools/setup.sh --test` installs PulseAudio")
        self.root.mkdir(parents=True, exist_ok=True)
        runtime = self.root / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        server_env = self.env()
        server_env.pop("PULSE_SERVER")
        server_env.update(
            HOME=str(self.root), XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(self.root / "config"),
            PULSE_RUNTIME_PATH=str(runtime / "pulse"), PULSE_STATE_PATH=str(self.root / "state"),
        )  # fmt: skip
        with open(self.root / "pulseaudio.stderr", "wb") as err:  # errors before the log file opens
            self.process = subprocess.Popen(
                self.command(), env=server_env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise PulseAudioError(f"pulseaudio exited with status {self.process.returncode}: {self._log_tail()}")
            if self.pactl("info", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise PulseAudioError(f"pulseaudio did not answer within {timeout:.0f} s: {self._log_tail()}")
            time.sleep(0.1)
        try:
            self.pactl("set-default-sink", SINK)
            self.pactl("set-default-source", f"{SINK}.monitor")
        except PulseAudioError as e:
            self.stop()
            raise PulseAudioError(f"{e}; pulseaudio log: {self._log_tail()}") from None
        # An idle null sink renders in blocks of its default 2 s latency, so a new recording would wait up
        # to 2 s for its first audio. A permanent low-latency listener keeps it ticking like a sound card.
        self._pacer = subprocess.Popen(
            ["parec", "--raw", "--latency-msec=10", f"--device={SINK}.monitor"],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(3):  # the block in progress when the pacer came still has to run out
            if self._first_audio_after() < 0.2:
                return self
        raise PulseAudioError(f"the null sink's monitor does not deliver audio promptly: {self._log_tail()}")

    def _first_audio_after(self, timeout: float = 5.0) -> float:
        """Seconds a new recording waits for its first bytes."""
        start = time.monotonic()
        probe = subprocess.Popen(
            ["parec", "--raw", "--latency-msec=10", f"--device={SINK}.monitor"], env=self.env(), stdout=subprocess.PIPE
        )
        try:
            probe.stdout.read(4)
        finally:
            probe.kill()
            probe.wait()
        return time.monotonic() - start

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["pactl", *args], env=self.env(), capture_output=True, text=True, timeout=10)
        if check and out.returncode:
            raise PulseAudioError(f"pactl {' '.join(args)}: {out.stderr.strip()}")
        return out

    def play(self, path: str | Path, wait: bool = True) -> subprocess.Popen:
        """Play a sound file into the null sink, i.e. into the virtual microphone.

        paplay's default 2 s buffer can run dry when paplay is starved of CPU just after it starts; the sink
        then plays a gap and the rest of the file arrives late (a 2.4 s stall 0.1 s in: SNR 18 dB against the
        file instead of 50-60). A buffer longer than the file (up to PulseAudio's 4 MB cap) holds all of it in
        the server before playback starts, so nothing can run dry."""
        proc = subprocess.Popen(
            ["paplay", "--latency-msec=60000", f"--device={SINK}", str(path)],
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        if wait:
            _, err = proc.communicate(timeout=120)
            if proc.returncode:
                raise PulseAudioError(f"paplay {path}: {err.decode().strip()}")
        return proc

    def stop(self) -> None:
        for proc in (self._pacer, self.process):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._pacer = self.process = None

    def _log_tail(self, n: int = 5) -> str:
        lines = []
        for path in (self.root / "pulseaudio.stderr", self.log):
            try:
                lines += path.read_text(errors="replace").splitlines()
            except OSError:
                pass
        return " | ".join(lines[-n:]) or "(nothing logged)"

    def __enter__(self) -> VirtualMicrophone:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
