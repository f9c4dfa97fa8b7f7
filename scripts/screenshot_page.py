"""The README's picture of the `asr serve` page: a real headless chromium uploads a file and waits for the transcript.

    python scripts/screenshot_page.py --model exp/fsdd/model.pt --audio a.wav b.wav --out docs/serve_page.png

Several --audio files are joined into one recording with 0.6 s pauses (so the page shows several segments).
Needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.audio import load_audio, write_audio  # noqa: E402
from asr.recognizer import load_model  # noqa: E402
from asr.serve import ServeConfig, create_app, running  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--audio", nargs="+", required=True)
    p.add_argument("--out", default="docs/serve_page.png")
    args = p.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    rec = load_model(args.model)
    sr = rec.cfg.features.sample_rate
    gap = np.zeros(int(0.6 * sr), dtype=np.float32)
    joined = np.concatenate([x for a in args.audio for x in (load_audio(a, sr).numpy(), gap)])
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "recording.wav"
        write_audio(wav, joined, sr)
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,900"):
            opts.add_argument(arg)
        app = create_app(rec, rec.options(), ServeConfig(model_id=Path(args.model).stem))
        with running(app) as url:
            driver = webdriver.Chrome(options=opts, service=Service(executable_path=shutil.which("chromedriver")))
            try:
                driver.get(url + "/")
                driver.find_element(By.ID, "file").send_keys(str(wav))
                WebDriverWait(driver, 60).until(EC.visibility_of_element_located((By.ID, "result")))
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(args.out)
                print(f"{args.out}: {driver.find_element(By.ID, 'transcript').text!r}")
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
