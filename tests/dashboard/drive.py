#!/usr/bin/env python3
"""Drives Cutover's dashboard in a real headless Chromium through selenium, as a person
would: `tests/e2e_dashboard.rs` starts the daemon (v1 live, some traffic served) and runs

    python3 tests/dashboard/drive.py <api host:port> <token> <min requests on the live slot> [flow]

Flows: `blue-green` (the default: the token, the figures, a hostile message, a cancelled
confirmation, deploy and rollback) and `canary` (a deploy held at its one 20 % step:
the split shown as 80/20, the step named, Promote from the page).

Every step waits for what the page shows (never a fixed sleep) and exits non-zero with
the reason when it does not appear. Last line on success: a JSON summary.
"""

import json
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

API, TOKEN, MIN_REQUESTS = sys.argv[1], sys.argv[2], int(sys.argv[3])
FLOW = sys.argv[4] if len(sys.argv) > 4 else "blue-green"
BASE = f"http://{API}"


def browser():
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--window-size=1280,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait(driver, what, cond, secs=30):
    try:
        return WebDriverWait(driver, secs, poll_frequency=0.1).until(lambda d: cond(d))
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        sys.exit(f"timed out waiting for {what}; the page shows:\n{body}")


# The page re-renders its cards every second: an element found in one WebDriver call
# can be replaced before the next, so every read is one script run in the page.
def text(driver, css):
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)


def card(css=""):
    return f'section[data-service="web"] {css}'.strip()


def use_token(driver, token):
    box = driver.find_element(By.ID, "token")
    box.clear()
    box.send_keys(token)
    driver.find_element(By.ID, "use-token").click()


def click(driver, action, accept):
    driver.find_element(By.CSS_SELECTOR, card(f'button[data-action="{action}"]')).click()
    alert = WebDriverWait(driver, 5).until(lambda d: d.switch_to.alert)
    alert.accept() if accept else alert.dismiss()


def live_version(driver):
    return text(driver, card('[data-role="live-version"] b'))


def split(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText);",
        card('[data-role="traffic"] div'))


def enabled(driver, action):
    return driver.execute_script(
        "const b = document.querySelector(arguments[0]); return !!b && !b.disabled;",
        card(f'button[data-action="{action}"]'))


def no_script_errors(driver):
    """Nothing the page did raised a script error or a CSP violation (the API's own
    refusals, which the page shows, are logged by the browser as failed loads)."""
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
              and "/api/v1/" not in e.get("message", "")]
    assert not severe, severe


def canary(driver, summary):
    driver.get(f"{BASE}/dashboard")
    use_token(driver, TOKEN)
    wait(driver, "v1 live", lambda d: live_version(d) == "v1")
    live = text(driver, card('[data-role="live"] b'))
    # Outside a canary's steps only Deploy and Rollback apply.
    assert not enabled(driver, "promote") and not enabled(driver, "pause")
    version = driver.find_element(By.CSS_SELECTOR, card('input[data-role="version"]'))
    version.send_keys("v2")
    click(driver, "deploy", accept=True)
    wait(driver, "the canary step", lambda d: "new release at 20%" in (text(d, card('[data-role="canary"]')) or ""), secs=90)
    new = "green" if live == "blue" else "blue"
    wait(driver, "the 80/20 split", lambda d: split(d) == [f"{live} 80%", f"{new} 20%"])
    summary["split"] = split(driver)
    assert enabled(driver, "promote") and enabled(driver, "abort")
    assert not enabled(driver, "deploy") and not enabled(driver, "rollback")
    click(driver, "promote", accept=True)
    wait(driver, "the promote accepted", lambda d: "promote accepted" in (text(d, card('[data-role="message"]')) or ""))
    wait(driver, "v2 live", lambda d: live_version(d) == "v2" and enabled(d, "rollback"), secs=90)
    summary["live_after_promote"] = text(driver, card('[data-role="live"] b'))
    no_script_errors(driver)


def main():
    driver = browser()
    summary = {}
    try:
        if FLOW == "canary":
            canary(driver, summary)
            print(json.dumps(summary))
            return
        driver.get(f"{BASE}/dashboard")
        # Reads need the token here: the page says so and shows no service.
        wait(driver, "the token prompt", lambda d: "needs a token" in (text(d, "#connection") or ""))
        assert not driver.find_elements(By.CSS_SELECTOR, "section.service"), "a service shown without the token"

        use_token(driver, "not-the-token")
        wait(driver, "the refusal of a wrong token", lambda d: "refused" in (text(d, "#connection") or ""))
        assert not driver.find_elements(By.CSS_SELECTOR, "section.service"), "a service shown with a wrong token"

        use_token(driver, TOKEN)
        wait(driver, "v1 live", lambda d: live_version(d) == "v1")
        live = text(driver, card('[data-role="live"] b'))
        summary["live_before"] = live
        # The live slot's figures are the proxy's counters.
        wait(driver, f"at least {MIN_REQUESTS} requests on {live}", lambda d: int(
            text(d, card(f'tr[data-slot="{live}"] [data-role="requests"]')) or 0) >= MIN_REQUESTS)
        assert text(driver, card(f'tr[data-slot="{live}"] [data-role="state"]')) == "live"
        assert split(driver) == [f"{live} 100%"], split(driver)
        assert enabled(driver, "deploy") and enabled(driver, "rollback")
        assert not enabled(driver, "promote") and not enabled(driver, "abort")

        # A hostile version string is refused by the API and shown as text, not markup.
        version = driver.find_element(By.CSS_SELECTOR, card('input[data-role="version"]'))
        version.send_keys('<img src=x id=injected onerror="document.title=1">')
        click(driver, "deploy", accept=True)
        wait(driver, "the refusal of a bad version", lambda d: "deploy refused" in (text(d, card('[data-role="message"]')) or ""))
        assert not driver.find_elements(By.ID, "injected"), "the API's message was rendered as HTML"
        assert driver.title == "Cutover", driver.title

        # Cancelling the confirmation sends nothing.
        version.clear()
        version.send_keys("v2")
        click(driver, "deploy", accept=False)
        time.sleep(1.5)  # more than a poll: a deployment started by mistake would show
        assert live_version(driver) == "v1" and enabled(driver, "deploy"), "a cancelled deploy ran"

        # Deploy v2 from the page; the page shows it in progress, then live.
        click(driver, "deploy", accept=True)
        wait(driver, "the deploy accepted", lambda d: "deploy accepted: deployment #" in (text(d, card('[data-role="message"]')) or ""))
        summary["deploy_message"] = text(driver, card('[data-role="message"]'))
        wait(driver, "v2 live", lambda d: live_version(d) == "v2" and enabled(d, "rollback"), secs=90)
        summary["live_after_deploy"] = text(driver, card('[data-role="live"] b'))
        assert summary["live_after_deploy"] != live, summary
        assert "succeeded" in (text(driver, card('[data-role="outcome"]')) or ""), text(driver, card())
        # No absent value is written out as such.
        shown = text(driver, "body")
        for word in ("null", "undefined", "NaN", "[object"):
            assert word not in shown, f"the page shows {word!r}:\n{shown}"
        # The recent deployments name the page as who asked, newest first.
        wait(driver, "the deploy in the history", lambda d: text(d, card('tr[data-deployment] [data-role="history-by"]')) == "dashboard")
        assert text(driver, card('tr[data-deployment] [data-role="history-outcome"]')) == "succeeded"

        # Roll back from the page.
        click(driver, "rollback", accept=True)
        wait(driver, "the rollback accepted", lambda d: "rollback accepted" in (text(d, card('[data-role="message"]')) or ""))
        wait(driver, "v1 live again", lambda d: live_version(d) == "v1" and enabled(d, "deploy"), secs=90)
        summary["live_after_rollback"] = text(driver, card('[data-role="live"] b'))

        no_script_errors(driver)
        # Forgetting the token hides nothing already shown but reads fail again.
        driver.find_element(By.ID, "forget-token").click()
        wait(driver, "the token prompt again", lambda d: "needs a token" in (text(d, "#connection") or ""))
        assert not enabled(driver, "rollback"), "buttons stay usable without the token"
    finally:
        driver.quit()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
