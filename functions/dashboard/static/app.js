// IoT dashboard, shared part: configuration, the API client, formatting, the refresh loop and the
// connection indicator. overview.js, device.js and alerts.js build the pages on top of it. No framework and
// no build step: the files are served as they are, by the dashboard function or from an OBS bucket.
(function () {
  "use strict";

  const DEFAULTS = {
    apiBase: "",
    refreshSeconds: 5,
    staleAfterSeconds: 300,
    offlineAfterSeconds: 3600,
    readingsPerPage: 100,
    defaultWindow: "auto",
  };
  // The device page's windows, in seconds; "auto" picks one of them when the page opens.
  const WINDOW_SECONDS = { hour: 3600, day: 86400, week: 7 * 86400, month: 30 * 86400, year: 365 * 86400 };

  function positive(value, fallback, min, max) {
    const number = Number(value);
    if (!Number.isFinite(number) || number < min) return fallback;
    return Math.min(number, max);
  }

  const given = window.IOT_CONFIG || {};
  const config = {
    apiBase: String(given.apiBase || "").trim().replace(/\/+$/, ""),
    refreshSeconds: positive(given.refreshSeconds, DEFAULTS.refreshSeconds, 1, 3600),
    staleAfterSeconds: positive(given.staleAfterSeconds, DEFAULTS.staleAfterSeconds, 1, 1e9),
    offlineAfterSeconds: positive(given.offlineAfterSeconds, DEFAULTS.offlineAfterSeconds, 1, 1e9),
    // The API answers at most 1000 readings a page.
    readingsPerPage: Math.round(positive(given.readingsPerPage, DEFAULTS.readingsPerPage, 1, 1000)),
    defaultWindow:
      given.defaultWindow === "auto" || Object.hasOwn(WINDOW_SECONDS, given.defaultWindow)
        ? given.defaultWindow
        : DEFAULTS.defaultWindow,
  };
  if (config.offlineAfterSeconds < config.staleAfterSeconds) config.offlineAfterSeconds = config.staleAfterSeconds;

  // ---- metrics ---------------------------------------------------------------------------------
  const METRICS = {
    temperature: { label: "Temperature", unit: "°C", color: "#e8590c" },
    humidity: { label: "Humidity", unit: "%", color: "#1c7ed6" },
    pressure: { label: "Pressure", unit: "hPa", color: "#7048e8" },
    voltage: { label: "Voltage", unit: "V", color: "#e67700" },
    current: { label: "Current", unit: "A", color: "#0ca678" },
    power: { label: "Power", unit: "W", color: "#d6336c" },
  };
  const METRIC_ORDER = Object.keys(METRICS);

  function metricInfo(metric) {
    return METRICS[metric] || { label: metric.charAt(0).toUpperCase() + metric.slice(1), unit: "", color: "#495057" };
  }

  function sortMetrics(metrics) {
    const rank = (m) => (METRIC_ORDER.includes(m) ? METRIC_ORDER.indexOf(m) : METRIC_ORDER.length);
    return Array.from(new Set(metrics)).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }

  // ---- formatting ------------------------------------------------------------------------------
  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  const axisFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
  const fullDateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

  function formatNumber(value) {
    return typeof value === "number" && Number.isFinite(value) ? numberFormat.format(value) : String(value);
  }

  function formatValue(value, metric) {
    const unit = metricInfo(metric).unit;
    return formatNumber(value) + (unit ? " " + unit : "");
  }

  function parseTime(iso) {
    const ms = iso ? Date.parse(iso) : NaN;
    return Number.isFinite(ms) ? ms : null;
  }

  // "27 Nov, 14:03:05" (in the reader's locale and time zone); the full form goes in tooltips.
  function formatDateTime(ms) {
    return ms == null ? "–" : dateTimeFormat.format(new Date(ms));
  }

  function formatFullDateTime(ms) {
    return ms == null ? "–" : fullDateTimeFormat.format(new Date(ms));
  }

  function formatClock(ms) {
    return timeFormat.format(new Date(ms));
  }

  function formatDuration(seconds) {
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) {
      const hours = Math.floor(seconds / 3600);
      const minutes = Math.floor((seconds % 3600) / 60);
      return hours + " h" + (minutes && hours < 10 ? " " + minutes + " min" : "");
    }
    return Math.floor(seconds / 86400) + " d";
  }

  function ago(ms, now = Date.now()) {
    if (ms == null) return "never";
    const seconds = (now - ms) / 1000;
    if (seconds < -60) return "in " + formatDuration(-seconds) + " (device clock ahead)";
    if (seconds < 5) return "just now";
    return formatDuration(seconds) + " ago";
  }

  const STATUS_RANK = { online: 0, stale: 1, offline: 2, unknown: 3 };
  const STATUS_LABEL = { online: "Online", stale: "Stale", offline: "Offline", unknown: "No data" };

  function deviceStatus(lastMs, now = Date.now()) {
    if (lastMs == null) return "unknown";
    const silent = (now - lastMs) / 1000;
    if (silent > config.offlineAfterSeconds) return "offline";
    if (silent > config.staleAfterSeconds) return "stale";
    return "online";
  }

  function setStatusBadge(node, status, lastMs) {
    node.className = "badge badge-" + status;
    node.textContent = STATUS_LABEL[status];
    node.dataset.status = status;
    node.title =
      status === "online" ? "Reported within the last " + formatDuration(config.staleAfterSeconds)
        : status === "stale" ? "Silent for more than " + formatDuration(config.staleAfterSeconds)
          : status === "offline" ? "Silent for more than " + formatDuration(config.offlineAfterSeconds)
            : "No reading yet";
    if (lastMs != null) node.title += " (last reading " + formatFullDateTime(lastMs) + ")";
  }

  // A <time> element whose "… ago" text the clock below keeps current.
  function setSince(node, ms) {
    const value = ms == null ? "" : String(ms);
    if (node.dataset.since !== value) {
      node.dataset.since = value;
      node.title = formatFullDateTime(ms);
      if (ms != null) node.dateTime = new Date(ms).toISOString();
    }
    setText(node, ago(ms));
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value == null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child != null) node.append(child);
    }
    return node;
  }

  // ---- the API ---------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  function apiUrl(path) {
    return config.apiBase + path;
  }

  // ---- signing in -------------------------------------------------------------------------------
  // With auth on, the API answers 401 to a request without a valid credential. The page then asks for
  // a read key in a form of its own and keeps it in sessionStorage: this tab only, until it is closed
  // or signs out; never localStorage (it would outlive the session), never the URL (it would end up in
  // the history and in logs). Every request carries it as "Authorization: Bearer <key>", and a request
  // refused with 401 waits for a key and is sent again, so nothing that failed has to be redone by hand.
  // With auth off nothing answers 401: no form, no "Sign out".
  const KEY_ITEM = "iotDashboard.readKey";
  const SIGNED_OUT_ITEM = "iotDashboard.signedOut"; // survives the reload that signing out does
  const KEY_SHAPE = /^iot_[A-Za-z0-9_-]{43}$/; // what `python -m local.tokens read` prints
  const auth = { memoryKey: null, waiting: null, form: null, signedOut: false };

  function session() {
    try {
      return window.sessionStorage; // null or throwing where storage is disabled
    } catch (_) {
      return null;
    }
  }

  function storedKey() {
    const storage = session();
    return storage ? storage.getItem(KEY_ITEM) : auth.memoryKey;
  }

  function storeKey(key) {
    const storage = session();
    if (!storage) auth.memoryKey = key;
    else if (key == null) storage.removeItem(KEY_ITEM);
    else storage.setItem(KEY_ITEM, key);
  }

  (function rememberSigningOut() {
    const storage = session();
    if (storage && storage.getItem(SIGNED_OUT_ITEM)) {
      auth.signedOut = true;
      storage.removeItem(SIGNED_OUT_ITEM);
    }
  })();

  function signOutButton() {
    let button = document.getElementById("sign-out");
    if (!button) {
      const bar = document.querySelector(".topbar");
      if (!bar) return null;
      button = element("button", { type: "button", id: "sign-out", class: "button button-quiet sign-out", hidden: true }, "Sign out");
      button.addEventListener("click", signOut);
      bar.append(button);
    }
    return button;
  }

  function showSignOut() {
    const button = signOutButton();
    if (button) button.hidden = storedKey() == null;
  }

  // Forgets the key and starts the page again: nothing read with the key stays on screen or in memory,
  // and the first request asks for a key anew.
  function signOut() {
    storeKey(null);
    const storage = session();
    if (storage) storage.setItem(SIGNED_OUT_ITEM, "1");
    window.location.reload();
  }

  function signInForm() {
    if (auth.form) return auth.form;
    const input = element("input", {
      type: "password",
      id: "sign-in-key",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "iot_…",
      "aria-describedby": "sign-in-reason sign-in-error",
    });
    const error = element("p", { id: "sign-in-error", class: "sign-in-error error-text", role: "alert", hidden: true });
    // No name on the input and no action on the form: the key is never part of a form submission.
    const form = element(
      "form",
      { id: "sign-in", class: "panel sign-in", novalidate: true, hidden: true },
      element("h2", { text: "Sign in" }),
      element("p", { id: "sign-in-reason", class: "sign-in-reason" }),
      element(
        "div",
        { class: "sign-in-row" },
        element("label", { class: "sign-in-field" }, element("span", { class: "control-label", text: "Read key" }), input),
        element("button", { type: "submit", class: "button", id: "sign-in-submit" }, "Sign in"),
      ),
      error,
      element(
        "p",
        { class: "muted sign-in-note" },
        "The key stays in this browser tab (session storage) until you close it or sign out, and goes to " +
          describeApi() + " with each request. An operator creates one with ",
        element("code", { text: "python -m local.tokens read NAME" }),
        ".",
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const key = input.value.trim();
      const problem = !key
        ? "Enter a read key."
        : !KEY_SHAPE.test(key)
          ? "That is not a key: a key is iot_ followed by 43 letters, digits, - or _."
          : "";
      error.textContent = problem;
      error.hidden = !problem;
      if (problem) return;
      input.value = "";
      storeKey(key);
      signedIn();
    });
    const main = document.querySelector("main") || document.body;
    main.prepend(form);
    auth.form = form;
    return form;
  }

  // The reason the form gives: "needed" (no key yet), "refused" (the key this tab had was refused).
  function askForKey(reason) {
    const form = signInForm();
    const text =
      reason === "refused"
        ? "The API refused the key this tab was using: it has been revoked, or it is not a valid key. Enter another one."
        : auth.signedOut
          ? "Signed out. Enter a read key to see the devices again."
          : "The API at " + describeApi() + " asks for a read key before it shows any device.";
    setText(document.getElementById("sign-in-reason"), text);
    document.body.classList.add("signing-in");
    const banner = document.getElementById("error-banner");
    if (banner) banner.hidden = true;
    const pill = document.getElementById("connection");
    if (pill) {
      pill.className = "connection connection-auth";
      pill.dataset.state = "auth";
      setText(pill, "Sign-in needed");
    }
    showSignOut();
    if (form.hidden) {
      form.hidden = false;
      document.getElementById("sign-in-key").focus();
    }
    if (!auth.waiting) {
      let resolve;
      const promise = new Promise((done) => (resolve = done));
      auth.waiting = { promise, resolve };
    }
    return auth.waiting.promise;
  }

  function signedIn() {
    auth.signedOut = false;
    auth.form.hidden = true;
    document.body.classList.remove("signing-in");
    const pill = document.getElementById("connection");
    if (pill && pill.dataset.state === "auth") {
      pill.className = "connection";
      pill.dataset.state = "loading";
      setText(pill, "Connecting…");
    }
    showSignOut();
    const waiting = auth.waiting;
    auth.waiting = null;
    if (waiting) waiting.resolve();
  }

  // A request sent with ``usedKey`` was answered 401: resolves once there is a key to try (at once when
  // a new one was given meanwhile), rejects when ``signal`` cancels the request. Requests refused
  // together (the overview's devices and counts, the device page's charts) wait on the same form, and
  // the first one says why.
  function keyRefused(usedKey, signal) {
    const current = storedKey();
    if (current != null && current !== usedKey) return Promise.resolve();
    let waiting;
    if (auth.waiting) waiting = auth.waiting.promise;
    else {
      if (usedKey != null) storeKey(null);
      waiting = askForKey(usedKey != null ? "refused" : "needed");
    }
    if (!signal) return waiting;
    return new Promise((resolve, reject) => {
      const cancel = () => reject(new ApiError("cancelled", 0));
      if (signal.aborted) return cancel();
      signal.addEventListener("abort", cancel, { once: true });
      waiting.then(() => {
        signal.removeEventListener("abort", cancel);
        resolve();
      });
    });
  }

  // One request: a GET with an Accept header (or ``write``: { method, body }, a JSON body) and, once the
  // reader has signed in, the key. A GET without a key is a "simple" CORS request (no preflight); with
  // one, or for a write, a page on another origin (an OBS website calling APIG) makes the browser ask
  // first with OPTIONS, which the API answers.
  async function fetchOnce(url, accept, key, signal, write) {
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(), 15000);
    const cancel = () => controller.abort();
    if (signal) signal.addEventListener("abort", cancel);
    const headers = { Accept: accept };
    if (key != null) headers.Authorization = "Bearer " + key;
    const init = { headers, cache: "no-store", signal: controller.signal };
    if (write) {
      init.method = write.method;
      if (write.body != null) {
        init.body = write.body;
        headers["Content-Type"] = "application/json";
      }
    }
    try {
      return await fetch(url, init);
    } catch (error) {
      if (signal && signal.aborted) throw new ApiError("cancelled", 0);
      throw new ApiError(
        error.name === "AbortError" ? "no answer within 15 s" : "the API could not be reached (network or CORS error)",
        0,
      );
    } finally {
      clearTimeout(timeout);
      if (signal) signal.removeEventListener("abort", cancel);
    }
  }

  // ``target`` is an API path or, for a link the API gave, an absolute URL. A 401 asks for a key (see
  // above) and sends the request again with it; every other answer goes to the caller.
  async function fetchApi(target, accept, signal, write) {
    const url = /^https?:/.test(target) ? target : apiUrl(target);
    for (;;) {
      const key = storedKey();
      const response = await fetchOnce(url, accept, key, signal, write);
      if (response.status !== 401) {
        if (key != null) showSignOut();
        return response;
      }
      await keyRefused(key, signal);
    }
  }

  // The error an unsuccessful answer carries: its JSON {"error": ...}, else its status line.
  async function failure(response) {
    let message = "HTTP " + response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch (_) {
      // not JSON: the status line says what there is to say
    }
    return new ApiError(message, response.status);
  }

  async function getJson(path) {
    const response = await fetchApi(path, "application/json");
    if (!response.ok) throw await failure(response);
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (body === null || typeof body !== "object") {
      throw new ApiError("the answer is not JSON; is apiBase in config.js the API's URL?", response.status);
    }
    return body;
  }

  // A change: ``method`` (POST, DELETE) with ``body`` (if any) as JSON; the answer's JSON, or an
  // ApiError with the API's message (a 403 says the key may not make this change: the callers say which
  // key may). Sent again after a 401 like every request: a write the API refused changed nothing.
  async function sendJson(method, path, body) {
    const write = { method, body: body === undefined ? null : JSON.stringify(body) };
    const response = await fetchApi(path, "application/json", null, write);
    if (!response.ok) throw await failure(response);
    try {
      return await response.json();
    } catch (_) {
      return {};
    }
  }

  // One page of CSV: its text and the absolute URL of the next page (from the Link header), if any.
  // A Link target is resolved against the URL it came from, so it works whichever origin the API has.
  async function getCsvPage(target, signal) {
    const response = await fetchApi(target, "text/csv", signal);
    if (!response.ok) throw await failure(response);
    const type = response.headers.get("Content-Type") || "";
    if (!type.startsWith("text/csv")) {
      throw new ApiError("the answer is not CSV (" + (type || "no content type") + ")", response.status);
    }
    const text = await response.text();
    const next = nextLink(response.headers.get("Link"));
    return { text, next: next ? new URL(next, response.url).href : null };
  }

  // The target of rel="next" in a Link header (RFC 8288), or null.
  function nextLink(header) {
    for (const part of (header || "").split(/,(?=\s*<)/)) {
      const match = /^\s*<([^>]*)>(.*)$/.exec(part);
      if (match && /;\s*rel\s*=\s*"?(?:[^";]*\s)?next(?:\s[^";]*)?"?\s*(?:;|$)/i.test(match[2])) return match[1];
    }
    return null;
  }

  // The reader's IANA time zone: the API buckets days (and longer) by its midnight.
  function timeZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (_) {
      return "UTC";
    }
  }

  function describeApi() {
    return config.apiBase || window.location.origin;
  }

  // The absolute URL of an API path, for showing to people.
  function absoluteApiUrl(path) {
    return describeApi() + path;
  }

  // ---- the refresh loop and the connection indicator --------------------------------------------
  const connection = { lastSuccess: null, failures: 0 };

  function showConnection(state, error) {
    const pill = document.getElementById("connection");
    const banner = document.getElementById("error-banner");
    if (state === "ok") {
      connection.lastSuccess = Date.now();
      connection.failures = 0;
      if (pill) {
        pill.className = "connection connection-ok";
        pill.dataset.state = "ok";
        setText(pill, "Live · updated " + formatClock(connection.lastSuccess));
      }
      if (banner) banner.hidden = true;
      const noData = document.getElementById("no-data");
      if (noData) noData.hidden = true;
      return;
    }
    connection.failures += 1;
    if (!connection.lastSuccess) {
      // Not loading any more: waiting for an API that does not answer (the banner says why).
      const loading = document.getElementById("loading");
      const noData = document.getElementById("no-data");
      if (loading) loading.hidden = true;
      if (noData) noData.hidden = false;
    }
    if (pill) {
      pill.className = "connection connection-error";
      pill.dataset.state = "error";
      setText(pill, "API unreachable");
    }
    if (banner) {
      const since = connection.lastSuccess
        ? "The values below are from " + formatClock(connection.lastSuccess) + "."
        : "Nothing could be loaded yet: check that apiBase in config.js points at the API (now: " +
          (config.apiBase ? "“" + config.apiBase + "”" : "the page's own origin") + ").";
      banner.replaceChildren(
        element("strong", { text: "Cannot load data from " + describeApi() + ": " }),
        document.createTextNode(error.message + ". " + since + " Retrying every " + config.refreshSeconds + " s."),
      );
      banner.hidden = false;
    }
  }

  // Runs ``load`` now and then every refreshSeconds after the previous run finished; skips while the
  // tab is hidden and catches up when it is shown again. Returns { now() } to refresh at once.
  function poll(load) {
    let timer = null;
    let running = false;
    let again = false;
    async function tick() {
      clearTimeout(timer);
      if (running) {
        again = true;
        return;
      }
      if (document.hidden) {
        timer = setTimeout(tick, config.refreshSeconds * 1000);
        return;
      }
      running = true;
      try {
        await load();
        showConnection("ok");
      } catch (error) {
        if (!(error instanceof ApiError)) console.error(error);
        showConnection("error", error);
      } finally {
        running = false;
        timer = setTimeout(tick, again ? 0 : config.refreshSeconds * 1000);
        again = false;
      }
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) tick();
    });
    tick();
    return { now: tick };
  }

  // Keeps every "… ago" text current between refreshes.
  setInterval(() => {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-since]")) {
      const ms = node.dataset.since === "" ? null : Number(node.dataset.since);
      setText(node, ago(ms, now));
    }
  }, 1000);

  // Reading and writing the page's own query string (filters survive a reload and the back button).
  function readQuery() {
    return new URLSearchParams(window.location.search);
  }

  function writeQuery(values) {
    const params = readQuery();
    for (const [key, value] of Object.entries(values)) {
      if (value == null || value === "") params.delete(key);
      else params.set(key, value);
    }
    const query = params.toString();
    const url = window.location.pathname + (query ? "?" + query : "") + window.location.hash;
    if (url !== window.location.pathname + window.location.search + window.location.hash) {
      window.history.replaceState(window.history.state, "", url);
    }
  }

  // Links between the pages work from the dashboard function and from a plain static website (OBS),
  // where only real files exist: device.html?id=... rather than /device/<id>.
  function deviceHref(deviceId) {
    return "/device.html?id=" + encodeURIComponent(deviceId);
  }

  window.IotDashboard = Object.assign(window.IotDashboard || {}, {
    config,
    WINDOW_SECONDS,
    METRICS,
    STATUS_RANK,
    STATUS_LABEL,
    ApiError,
    metricInfo,
    sortMetrics,
    formatNumber,
    formatValue,
    axisFormat,
    formatDateTime,
    formatFullDateTime,
    formatDuration,
    parseTime,
    ago,
    deviceStatus,
    setStatusBadge,
    setSince,
    setText,
    element,
    getJson,
    sendJson,
    getCsvPage,
    nextLink,
    timeZone,
    apiUrl,
    absoluteApiUrl,
    poll,
    readQuery,
    writeQuery,
    deviceHref,
  });
})();
