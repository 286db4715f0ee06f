// The device page: latest values, a chart per metric (uPlot) over a chosen window, the window's
// readings page by page, and the window as a CSV file. Everything updates in place.
//
// The charts draw /api/device/<id>/series: the API aggregates the window into buckets (its `auto`
// interval keeps a window at most a few hundred buckets), so a year is as complete as an hour. Each
// chart draws the buckets' averages as a line over a band from their minimum to their maximum; a bucket
// without readings is absent from the answer and left as a gap. The table and the CSV file page
// through /api/device/<id>/history with the cursor the API hands out (keyset paging: a reading arriving
// meanwhile neither repeats nor skips a row).
(function () {
  "use strict";
  const D = window.IotDashboard;

  const WINDOWS = D.WINDOW_SECONDS;
  const WINDOW_TEXT = {
    hour: "the last hour",
    day: "the last day",
    week: "the last 7 days",
    month: "the last 30 days",
    year: "the last year",
  };
  // defaultWindow "auto": the shortest window that holds at least this share of the device's readings
  // of the last year.
  const AUTO_SHARE = 0.8;
  const FULL_RELOAD_EVERY = 12; // refreshes: late data and deletions show up within about a minute
  const CSV_PAGE = 1000; // readings per request: the API's largest page
  const UNIT_SECONDS = { m: 60, h: 3600, d: 86400 };
  // uPlot's time-axis formats, in 24-hour time: [tick step, format, then the date line when it changes].
  const TIME_TICKS = [
    [365 * 86400, "{YYYY}", null, null, null, null, null, null, 1],
    [28 * 86400, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [86400, "{D} {MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [3600, "{HH}:{mm}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
    [60, "{HH}:{mm}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
    [1, "{HH}:{mm}:{ss}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
  ];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]; // uPlot's names
  const AXIS_FONT = "12px -apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, Arial, 'Liberation Sans', sans-serif";
  const LABEL_GAP = 12; // px, at least, between two neighbouring time labels
  // An open alert on a chart: the shade over the time it has been open, and the line where it opened.
  const ALERT_SHADE = "rgba(220, 38, 38, 0.09)";
  const ALERT_LINE = "#dc2626";

  // The least distance between two x-axis ticks: half the widest label (the first tick's date carries
  // the year, "28 May 2026") plus half the widest label next to it ("28 May", "00:00:00") plus a gap.
  // With uPlot's default (50 px), "28 Nov 2026" could run into "29 Nov", which then read as "9 Nov".
  let xSpace = null;
  function xTickSpace() {
    if (xSpace == null) {
      const ctx = document.createElement("canvas").getContext("2d");
      ctx.font = AXIS_FONT;
      const width = (text) => ctx.measureText(text).width;
      const month = Math.max(...MONTHS.map((name) => width(name)));
      const withYear = width("28 ") + month + width(" 2026");
      const neighbour = Math.max(width("28 ") + month, width("00:00:00"));
      xSpace = Math.ceil((withYear + neighbour) / 2 + LABEL_GAP);
    }
    return xSpace;
  }

  // "30m" -> 1800; null for what is not an interval.
  function intervalSeconds(text) {
    const match = /^(\d+)([mhd])$/.exec(text || "");
    return match ? Number(match[1]) * UNIT_SECONDS[match[2]] : null;
  }

  // A moment from the page's URL: epoch milliseconds or an ISO-8601 time.
  function parseMoment(text) {
    if (!text) return null;
    if (/^\d+$/.test(text)) return Number(text);
    return D.parseTime(text);
  }

  // <input type="datetime-local"> speaks the reader's local time without an offset: "2026-11-30T14:05".
  function localInputValue(ms) {
    const d = new Date(ms);
    const two = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + "T" + two(d.getHours()) + ":" + two(d.getMinutes());
  }

  function parseLocalInput(value) {
    const ms = value ? new Date(value).getTime() : NaN; // a date-time without an offset is local time
    return Number.isFinite(ms) ? ms : null;
  }

  // ISO-8601 basic format in UTC, "20261130T140500Z": sortable, and without the colons some file systems refuse.
  function fileStamp(ms) {
    return new Date(ms).toISOString().replace(/\.\d+Z$/, "Z").replace(/[-:]/g, "");
  }

  // The device id from device.html?id=<id> (static website) or /device/<id> (the dashboard function).
  D.deviceIdFromLocation = function deviceIdFromLocation() {
    const id = new URLSearchParams(window.location.search).get("id");
    if (id) return id.trim();
    const match = /\/device\/([^/]+)\/?$/.exec(window.location.pathname);
    if (!match) return "";
    try {
      return decodeURIComponent(match[1]);
    } catch (_) {
      return match[1];
    }
  };

  // metric -> uPlot instance, and metric -> the API path its data came from, for whoever wants to
  // look (the browser tests compare the chart with the API's answer to the same request).
  D.charts = {};
  D.chartSources = {};
  D.chartAlerts = {}; // metric -> when (epoch s) its oldest open alert opened, while it has one

  D.device = function device(deviceId) {
    const loading = document.getElementById("loading");
    const notFound = document.getElementById("not-found");
    const content = document.getElementById("content");

    if (!deviceId) {
      loading.hidden = true;
      notFound.replaceChildren(
        D.element("strong", { text: "No device chosen. " }),
        "Open a device from the ",
        D.element("a", { href: "/" }, "overview"),
        ".",
      );
      notFound.hidden = false;
      document.getElementById("connection").hidden = true;
      return;
    }

    document.getElementById("title").textContent = deviceId;
    document.title = deviceId + " · IoT Device Monitor";
    const base = "/api/device/" + encodeURIComponent(deviceId);
    const tz = D.timeZone();

    // The window: { key: "hour" … "year" } ends now (and moves with it), { key: "custom", from, to } is
    // fixed (epoch ms). From the URL (the reader chose it) or config; null: "auto", decided on the
    // first load.
    const query = D.readQuery();
    let choice = null;
    const urlFrom = parseMoment(query.get("from"));
    const urlTo = parseMoment(query.get("to"));
    if (urlFrom != null && urlTo != null && urlFrom < urlTo) choice = { key: "custom", from: urlFrom, to: urlTo };
    else if (Object.hasOwn(WINDOWS, query.get("window"))) choice = { key: query.get("window") };
    else if (Object.hasOwn(WINDOWS, D.config.defaultWindow)) choice = { key: D.config.defaultWindow };
    const hidden = new Set((query.get("hide") || "").split(",").filter(Boolean));

    const series = {}; // metric -> { path, key, latest, from, to, interval, step, points, error }
    const cards = {}; // metric -> the chart card's parts
    const latestCards = {}; // metric -> the latest-value card's parts
    const chips = {}; // metric -> the filter chip
    let latest = null;
    let openAlerts = []; // this device's open alerts, newest first
    let refreshes = 0;
    let poller = null;
    let rangeEdited = false; // the reader is typing a custom range: leave the inputs alone

    function choiceKey() {
      if (!choice) return "";
      return choice.key === "custom" ? "custom:" + choice.from + ":" + choice.to : choice.key;
    }

    // The window's [from, to) in epoch ms. A moving window ends now, or just after `newest` (an ISO
    // time) when a device whose clock runs ahead has reported later than that.
    function currentRange(newest) {
      if (choice.key === "custom") return { from: choice.from, to: choice.to };
      const newestMs = D.parseTime(newest);
      const to = Math.max(Date.now(), newestMs != null ? newestMs + 1 : 0);
      return { from: to - WINDOWS[choice.key] * 1000, to };
    }

    function windowText() {
      if (!choice) return "the window";
      if (choice.key !== "custom") return WINDOW_TEXT[choice.key];
      return "the range " + D.formatDateTime(choice.from) + " – " + D.formatDateTime(choice.to);
    }

    function metricsOf(answer) {
      return D.sortMetrics(Object.keys((answer && answer.metrics) || {}));
    }

    function shownMetrics() {
      return metricsOf(latest).filter((metric) => !hidden.has(metric));
    }

    function queryString(values) {
      const params = new URLSearchParams();
      for (const [name, value] of Object.entries(values)) {
        if (value != null && value !== "") params.set(name, String(value));
      }
      return params.toString();
    }

    // ---- charts' data ----------------------------------------------------------------------------
    function seriesPath(metric, range, interval, agg) {
      return base + "/series?" + queryString({ metric_type: metric, from: range.from, to: range.to, interval, agg, tz });
    }

    // The answer's buckets, oldest first: { t (epoch s), count, avg, min, max }.
    function bucketsOf(body) {
      const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);
      const buckets = [];
      for (const point of body.points || []) {
        const ms = D.parseTime(point.t);
        if (ms == null) continue;
        buckets.push({ t: ms / 1000, count: number(point.count) || 0, avg: number(point.avg), min: number(point.min), max: number(point.max) });
      }
      return buckets.sort((a, b) => a.t - b.t);
    }

    async function loadSeries(metric, stamp) {
      const range = currentRange(stamp);
      const path = seriesPath(metric, range, "auto", "avg,min,max");
      const known = { path, key: choiceKey(), latest: stamp, from: range.from / 1000, to: range.to / 1000 };
      try {
        const body = await D.getJson(path);
        known.interval = typeof body.interval === "string" ? body.interval : "";
        known.step = intervalSeconds(known.interval);
        known.points = bucketsOf(body);
      } catch (error) {
        // The API refusing this window (a range too long for any interval, say) is said on the chart;
        // anything else is the connection's business (the banner).
        if (!(error instanceof D.ApiError) || error.status !== 400) throw error;
        known.error = error.message;
        known.points = [];
      }
      series[metric] = known;
    }

    // How many readings each bucket of the window holds, all metrics together: [{ t, end, count }] (s).
    async function bucketCounts(metrics, range, interval) {
      const answers = await Promise.all(metrics.map((metric) => D.getJson(seriesPath(metric, range, interval, "count"))));
      const step = intervalSeconds(interval);
      return answers.flatMap((body) =>
        bucketsOf(body).map((bucket) => ({ t: bucket.t, end: Math.min(bucket.t + step, range.to / 1000), count: bucket.count })),
      );
    }

    // "auto": the shortest window that holds AUTO_SHARE of the device's readings of the last year,
    // counted per day for the long windows and per 5 minutes for the hour and the day.
    async function fittingWindow(metrics) {
      const now = Date.now();
      const [days, minutes] = await Promise.all([
        bucketCounts(metrics, { from: now - WINDOWS.year * 1000, to: now }, "1d"),
        bucketCounts(metrics, { from: now - WINDOWS.day * 1000, to: now }, "5m"),
      ]);
      const total = days.reduce((sum, bucket) => sum + bucket.count, 0);
      if (!total) return "day";
      for (const key of Object.keys(WINDOWS)) {
        const from = now / 1000 - WINDOWS[key];
        // A bucket the window's start cuts through counts in proportion (readings spread evenly).
        const inside = (WINDOWS[key] <= WINDOWS.day ? minutes : days).reduce((sum, bucket) => {
          const share = bucket.end > bucket.t ? (bucket.end - Math.max(bucket.t, from)) / (bucket.end - bucket.t) : 1;
          return sum + bucket.count * Math.min(1, Math.max(0, share));
        }, 0);
        if (inside >= AUTO_SHARE * total) return key;
      }
      return "year";
    }

    // ---- the readings table: one page at a time -----------------------------------------------------
    // `range` is fixed when the first page is loaded, so "Older" continues the same listing.
    const table = { version: 0, page: 1, before: 0, next: null, range: null, rows: [], key: "", seen: "", error: "" };

    // The readings of the metrics shown: the API filters one metric itself; for several (not all) of
    // them, a page of every metric is filtered here.
    function readingsFilter() {
      const all = metricsOf(latest);
      const shown = shownMetrics();
      return { metric: shown.length === 1 && all.length > 1 ? shown[0] : null, keep: shown.length < all.length ? new Set(shown) : null };
    }

    function historyQuery(range, metric, extra) {
      return queryString({ metric_type: metric, from: range.from, to: range.to, ...extra });
    }

    async function fetchReadings(range, metric, keep, cursor) {
      const body = await D.getJson(base + "/history?" + historyQuery(range, metric, { limit: D.config.readingsPerPage, cursor }));
      const rows = [];
      for (const row of body.data || []) {
        const ms = D.parseTime(row.timestamp);
        if (ms == null || typeof row.value !== "number" || (keep && !keep.has(row.metric_type))) continue;
        rows.push({ t: ms / 1000, metric: row.metric_type, value: row.value });
      }
      return { rows, next: body.has_more && body.next_cursor ? body.next_cursor : null };
    }

    function tableFilterKey() {
      return shownMetrics().join(",");
    }

    // Page 1 again: the newest readings of the window as it is now.
    async function loadFirstPage() {
      const version = ++table.version;
      const filter = readingsFilter();
      const range = currentRange(latest.last_updated);
      const page = await fetchReadings(range, filter.metric, filter.keep, null);
      if (version !== table.version) return; // the reader moved on meanwhile
      Object.assign(table, { page: 1, before: 0, next: page.next, range, rows: page.rows, error: "" });
      table.key = choiceKey() + "|" + tableFilterKey();
    }

    async function showOlder() {
      if (!table.next) return;
      const version = ++table.version;
      const filter = readingsFilter();
      setPagerBusy(true);
      try {
        const page = await fetchReadings(table.range, filter.metric, filter.keep, table.next);
        if (version !== table.version) return;
        Object.assign(table, { page: table.page + 1, before: table.before + table.rows.length, next: page.next, rows: page.rows, error: "" });
      } catch (error) {
        if (version !== table.version) return;
        table.error = "Older readings could not be loaded: " + error.message + ".";
      } finally {
        setPagerBusy(false);
      }
      renderTable();
      document.querySelector(".readings-wrap").scrollTop = 0;
    }

    async function showNewest() {
      setPagerBusy(true);
      try {
        await loadFirstPage();
      } catch (error) {
        table.error = "The newest readings could not be loaded: " + error.message + ".";
      } finally {
        setPagerBusy(false);
      }
      renderTable();
      document.querySelector(".readings-wrap").scrollTop = 0;
    }

    let pagerBusy = false;
    function setPagerBusy(busy) {
      pagerBusy = busy;
      updatePager();
    }

    function updatePager() {
      document.getElementById("page-newest").disabled = pagerBusy || table.page === 1;
      document.getElementById("page-older").disabled = pagerBusy || !table.next;
    }

    // ---- loading ------------------------------------------------------------------------------------
    async function load() {
      const alerting = D.fetchOpenAlerts(deviceId).then(
        (value) => ({ status: "fulfilled", value }),
        (reason) => ({ status: "rejected", reason }),
      );
      try {
        latest = await D.getJson(base + "/latest");
      } catch (error) {
        if (error.status !== 404 && error.status !== 403) throw error;
        latest = null;
        for (const metric of Object.keys(series)) delete series[metric];
        if (error.status === 403) showForbidden();
        else showNotFound();
        await alerting;
        document.getElementById("device-alerts").hidden = true;
        return;
      }
      showAlerts(await alerting);
      refreshes += 1;
      const full = refreshes % FULL_RELOAD_EVERY === 1;
      const metrics = metricsOf(latest);
      if (!choice) choice = { key: await fittingWindow(metrics) }; // "auto": once, when the page opens
      const key = choiceKey();
      await Promise.all(
        metrics
          .filter((metric) => !hidden.has(metric))
          .map((metric) => {
            const stamp = latest.metrics[metric].timestamp;
            const known = series[metric];
            if (!full && known && known.key === key && known.latest === stamp) return null;
            return loadSeries(metric, stamp);
          }),
      );
      for (const metric of Object.keys(series)) {
        if (!metrics.includes(metric)) delete series[metric];
      }
      // The first page follows new readings; an older page stays as it is until the reader leaves it.
      const seen = metrics.map((metric) => latest.metrics[metric].timestamp).join("|");
      const tableKey = key + "|" + tableFilterKey();
      if (table.page === 1 && !pagerBusy && (full || table.seen !== seen || table.key !== tableKey)) {
        await loadFirstPage();
        table.seen = seen;
      }
      render(metrics);
    }

    function refreshNow() {
      if (poller) poller.now();
    }

    // ---- open alerts: a banner above the data, and the alerting metrics' charts marked ---------------
    const alertRows = D.alertTable(document.querySelector("#device-alerts tbody"), { onChange: refreshNow });

    // ``settled``: the outcome of D.fetchOpenAlerts(deviceId). An API without alerts (404) or one that
    // does not answer leaves the banner as it was: the device's data matter more than the alerts.
    function showAlerts(settled) {
      if (settled.status === "rejected") {
        if (settled.reason && settled.reason.status === 404) openAlerts = [];
        else if (!(settled.reason instanceof D.ApiError)) console.error(settled.reason);
      } else {
        openAlerts = settled.value.alerts;
      }
      const banner = document.getElementById("device-alerts");
      banner.hidden = openAlerts.length === 0;
      D.setText(
        document.getElementById("device-alerts-title"),
        openAlerts.length === 1 ? "1 open alert on this device" : D.formatNumber(openAlerts.length) + " open alerts on this device",
      );
      alertRows.render(openAlerts);
    }

    // The open threshold alerts of ``metric``: { from (epoch s, the earliest opening), names }, or null.
    // A no-data alert is about the whole device: the banner says it, no chart is marked.
    function alertMark(metric) {
      const mine = openAlerts.filter((alert) => alert.metric_type === metric && D.parseTime(alert.opened_at) != null);
      if (!mine.length) return null;
      const from = Math.min(...mine.map((alert) => D.parseTime(alert.opened_at))) / 1000;
      return { from, names: Array.from(new Set(mine.map((alert) => alert.rule_name))) };
    }

    // In place of the device's data: why there is none, and where to go.
    function showInstead(headline, ...explanation) {
      loading.hidden = true;
      content.hidden = true;
      document.getElementById("device-status").hidden = true;
      document.getElementById("device-last").textContent = "";
      notFound.replaceChildren(D.element("strong", { text: headline }), ...explanation);
      notFound.hidden = false;
    }

    function showNotFound() {
      showInstead(
        "No readings from “" + deviceId + "”. ",
        "The device has not reported yet, or its data was deleted. This page keeps checking every " +
          D.config.refreshSeconds + " s; the ",
        D.element("a", { href: "/" }, "overview"),
        " lists the devices that have reported.",
      );
    }

    // The key signed in with may read other devices, not this one (the API says the same whether or
    // not the device exists).
    function showForbidden() {
      showInstead(
        "This key may not read device “" + deviceId + "”. ",
        "Sign out and sign in with a key that covers it, or go back to the ",
        D.element("a", { href: "/" }, "overview"),
        ", which lists the devices this key may read.",
      );
    }

    // ---- rendering ----------------------------------------------------------------------------------
    function render(metrics) {
      loading.hidden = true;
      notFound.hidden = true;
      content.hidden = false;
      renderHead();
      renderLatest(metrics);
      renderChips(metrics);
      renderWindow();
      renderCharts(metrics);
      renderTable();
    }

    function renderHead() {
      const last = D.parseTime(latest.last_updated);
      const badge = document.getElementById("device-status");
      D.setStatusBadge(badge, D.deviceStatus(last), last);
      badge.hidden = false;
      const line = document.getElementById("device-last");
      if (!line.firstChild) line.append("Last reported ", D.element("time", { id: "device-since" }));
      D.setSince(document.getElementById("device-since"), last);
    }

    function renderLatest(metrics) {
      const grid = document.getElementById("latest");
      metrics.forEach((metric, index) => {
        let card = latestCards[metric];
        const info = D.metricInfo(metric);
        if (!card) {
          card = {
            root: D.element("div", { class: "latest-card", dataset: { metric } }),
            value: D.element("span", { class: "latest-value" }),
            since: D.element("time", { class: "latest-since" }),
          };
          card.root.style.setProperty("--metric-color", info.color);
          card.root.append(D.element("span", { class: "latest-label", text: info.label }), card.value, card.since);
          latestCards[metric] = card;
        }
        if (grid.children[index] !== card.root) grid.insertBefore(card.root, grid.children[index] || null);
        const reading = latest.metrics[metric];
        D.setText(card.value, D.formatValue(reading.value, metric));
        card.value.dataset.value = String(reading.value);
        D.setSince(card.since, D.parseTime(reading.timestamp));
        card.root.classList.toggle("alerting", alertMark(metric) != null);
      });
      for (const metric of Object.keys(latestCards)) {
        if (!metrics.includes(metric)) {
          latestCards[metric].root.remove();
          delete latestCards[metric];
        }
      }
    }

    function renderChips(metrics) {
      const box = document.getElementById("metric-filter");
      metrics.forEach((metric, index) => {
        let chip = chips[metric];
        if (!chip) {
          const info = D.metricInfo(metric);
          const input = D.element("input", { type: "checkbox", value: metric });
          input.addEventListener("change", () => {
            if (input.checked) hidden.delete(metric);
            else hidden.add(metric);
            D.writeQuery({ hide: Array.from(hidden).sort().join(",") });
            render(metricsOf(latest));
            refreshNow(); // the chart of a metric shown again, and the table for the new choice
          });
          chip = D.element("label", { class: "chip", dataset: { metric } }, input, D.element("span", { text: info.label }));
          chip.style.setProperty("--metric-color", info.color);
          chips[metric] = chip;
        }
        chip.firstChild.checked = !hidden.has(metric);
        if (box.children[index] !== chip) box.insertBefore(chip, box.children[index] || null);
      });
      for (const metric of Object.keys(chips)) {
        if (!metrics.includes(metric)) {
          chips[metric].remove();
          delete chips[metric];
        }
      }
      document.getElementById("no-metric").hidden = metrics.some((metric) => !hidden.has(metric));
    }

    // The window buttons, and the range inputs showing the window (unless the reader is editing them).
    function renderWindow() {
      for (const button of document.querySelectorAll("#windows button")) {
        button.setAttribute("aria-pressed", String(!!choice && button.dataset.window === choice.key));
      }
      if (!choice || rangeEdited || !latest) return;
      const range = currentRange(latest.last_updated);
      const fromInput = document.getElementById("range-from");
      const toInput = document.getElementById("range-to");
      if (document.activeElement !== fromInput) fromInput.value = localInputValue(range.from);
      if (document.activeElement !== toInput) toInput.value = localInputValue(range.to);
    }

    // The chart's width: the box's content width (its clientWidth includes its padding).
    function chartWidth(box) {
      const style = window.getComputedStyle(box);
      return Math.max(200, Math.floor(box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)));
    }

    function chartHeight() {
      return window.innerWidth < 640 ? 180 : 220;
    }

    function newCard(metric) {
      const info = D.metricInfo(metric);
      const card = {
        root: D.element("article", { class: "panel chart-card", dataset: { metric } }),
        summary: D.element("span", { class: "chart-summary muted" }),
        interval: D.element("span", { class: "chart-interval" }),
        box: D.element("div", { class: "chart-box" }),
        empty: D.element("div", { class: "chart-empty", hidden: true }),
        view: { from: 0, to: 1 },
        counts: [],
        summaryText: "",
        chart: null,
        alert: null, // { from, names } while the metric has open alerts
        alertBadge: D.element("span", { class: "alert-badge", hidden: true }),
      };
      card.root.style.setProperty("--metric-color", info.color);
      const title = D.element("h2", {}, D.element("span", { class: "dot", "aria-hidden": "true" }), info.label);
      if (info.unit) title.append(D.element("span", { class: "unit", text: info.unit }));
      title.append(card.interval, card.alertBadge);
      card.root.append(D.element("div", { class: "panel-head" }, title, card.summary), card.box);
      card.box.append(card.empty);
      return card;
    }

    // Markers only where a line cannot show the value: a bucket with empty buckets on both sides. (When
    // uPlot shows every point anyway, `show` is true and nothing needs choosing.)
    function isolatedPoints(u, seriesIndex, show) {
      if (show) return null;
      const ys = u.data[seriesIndex];
      const lonely = [];
      for (let i = 0; i < ys.length; i++) {
        if (ys[i] != null && ys[i - 1] == null && ys[i + 1] == null) lonely.push(i);
      }
      return lonely.length ? lonely : null;
    }

    function describeBucket(card, index, metric) {
      const u = card.chart;
      const count = card.counts[index];
      const when = D.formatDateTime(u.data[0][index] * 1000);
      if (count <= 1) return when + " · " + D.formatValue(u.data[1][index], metric);
      return (
        when + " · avg " + D.formatValue(u.data[1][index], metric) + " · " + D.formatNumber(u.data[2][index]) + " – " +
        D.formatValue(u.data[3][index], metric) + " · " + D.formatNumber(count) + " readings"
      );
    }

    function newChart(metric, card, data) {
      const info = D.metricInfo(metric);
      const axis = {
        stroke: "#5b6474",
        font: AXIS_FONT,
        grid: { stroke: "#edf0f5", width: 1 },
        ticks: { stroke: "#dfe3ea", width: 1, size: 4 },
      };
      const edge = { stroke: info.color + "59", width: 1, points: { show: false } };
      const options = {
        width: chartWidth(card.box),
        height: chartHeight(),
        cursor: { drag: { x: false, y: false }, points: { size: 8 } },
        legend: { show: false },
        scales: { x: { time: true, range: () => [card.view.from, card.view.to] } },
        series: [
          {},
          { label: info.label + " (average)", stroke: info.color, width: 2, points: { size: 5, fill: info.color, filter: isolatedPoints } },
          { label: "minimum", ...edge },
          { label: "maximum", ...edge },
        ],
        // The min-max band: between the maximum (upper) and the minimum (lower) series. A bucket of one
        // reading has min = max = avg, so the band narrows to the line there.
        bands: [{ series: [3, 2], fill: info.color + "2e" }],
        axes: [{ ...axis, values: TIME_TICKS, space: xTickSpace() }, { ...axis, size: 64, values: (u, splits) => splits.map((v) => D.axisFormat.format(v)) }],
        hooks: {
          draw: [(u) => drawAlert(u, card)],
          // Hovering a chart shows the bucket under the cursor in place of the window's summary.
          setCursor: [
            (u) => {
              const index = u.cursor.idx;
              const hovering = index != null && u.data[1][index] != null;
              card.summary.classList.toggle("hovering", hovering);
              D.setText(card.summary, hovering ? describeBucket(card, index, metric) : card.summaryText);
            },
          ],
        },
      };
      return new window.uPlot(options, data, card.box);
    }

    // uPlot's columns [t, avg, min, max], with a null row where buckets are missing: the line and the
    // band stop there instead of joining the readings on either side of a silence.
    function chartData(known, card) {
      const columns = [[], [], [], []];
      card.counts = [];
      let previous = null;
      for (const bucket of known.points) {
        if (previous != null && known.step && bucket.t - previous > 1.5 * known.step) {
          columns[0].push(previous + known.step);
          columns[1].push(null);
          columns[2].push(null);
          columns[3].push(null);
          card.counts.push(0);
        }
        columns[0].push(bucket.t);
        columns[1].push(bucket.avg);
        columns[2].push(bucket.min);
        columns[3].push(bucket.max);
        card.counts.push(bucket.count);
        previous = bucket.t;
      }
      return columns;
    }

    function renderCharts(metrics) {
      const holder = document.getElementById("charts");
      metrics.forEach((metric, index) => {
        let card = cards[metric];
        if (!card) card = cards[metric] = newCard(metric);
        if (holder.children[index] !== card.root) holder.insertBefore(card.root, holder.children[index] || null);
        card.root.hidden = hidden.has(metric);
        const known = series[metric];
        if (card.root.hidden || !known) return;

        markAlert(metric, card, alertMark(metric));
        const data = chartData(known, card);
        // The first bucket may begin before the window does: the axis starts with it, so it is drawn.
        card.view = { from: Math.min(known.from, data[0].length ? data[0][0] : known.from), to: known.to };
        if (!card.chart) {
          card.chart = newChart(metric, card, data);
          D.charts[metric] = card.chart;
        } else {
          card.chart.setData(data);
        }
        D.chartSources[metric] = known.path;
        D.setText(card.interval, known.interval ? known.interval + " buckets" : "");
        card.interval.title = known.interval
          ? "Each point is the average of a " + known.interval + " bucket's readings; the band spans their minimum and maximum"
          : "";
        summarise(metric, card, known);
      });
      for (const metric of Object.keys(cards)) {
        if (!metrics.includes(metric)) {
          if (cards[metric].chart) cards[metric].chart.destroy();
          cards[metric].root.remove();
          delete cards[metric];
          delete D.charts[metric];
          delete D.chartSources[metric];
          delete D.chartAlerts[metric];
        }
      }
    }

    // The card of an alerting metric: its title says which rule and since when, and the chart shades
    // the window from the alert's opening on (drawn by the chart's draw hook, see newChart).
    function markAlert(metric, card, mark) {
      card.alert = mark;
      card.root.classList.toggle("alerting", mark != null);
      card.alertBadge.hidden = mark == null;
      if (mark) {
        D.chartAlerts[metric] = mark.from;
        D.setText(card.alertBadge, "Alert since " + D.formatDateTime(mark.from * 1000));
        card.alertBadge.title = mark.names.join(", ") + ": open since " + D.formatFullDateTime(mark.from * 1000);
      } else {
        delete D.chartAlerts[metric];
      }
    }

    // On the canvas, after uPlot has drawn: a light red shade from the alert's opening to the right edge
    // of the plot, and a red line where it opened (when that is inside the window).
    function drawAlert(u, card) {
      const mark = card.alert;
      if (!mark) return;
      const { left, top, width, height } = u.bbox;
      const x = Math.round(u.valToPos(mark.from, "x", true));
      const start = Math.max(left, x);
      const end = left + width;
      if (start >= end) return; // opened after the window (a device clock ahead): nothing to shade
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = ALERT_SHADE;
      ctx.fillRect(start, top, end - start, height);
      if (x >= left) {
        ctx.fillStyle = ALERT_LINE;
        const lineWidth = Math.max(2, Math.round(2 * (window.devicePixelRatio || 1)));
        ctx.fillRect(x - Math.floor(lineWidth / 2), top, lineWidth, height);
      }
      ctx.restore();
    }

    function summarise(metric, card, known) {
      const info = D.metricInfo(metric);
      let count = 0;
      let sum = 0;
      let min = Infinity;
      let max = -Infinity;
      for (const bucket of known.points) {
        if (bucket.avg == null || !bucket.count) continue;
        count += bucket.count;
        sum += bucket.avg * bucket.count;
        min = Math.min(min, bucket.min != null ? bucket.min : bucket.avg);
        max = Math.max(max, bucket.max != null ? bucket.max : bucket.avg);
      }
      if (known.error) {
        card.summaryText = "not shown";
        card.empty.textContent = "The API refused this window: " + known.error;
        card.empty.hidden = false;
      } else if (!count) {
        card.summaryText = "no readings";
        const last = latest.metrics[metric] ? D.parseTime(latest.metrics[metric].timestamp) : null;
        card.empty.textContent =
          "No " + info.label.toLowerCase() + " readings in " + windowText() + "." +
          (last != null ? " The latest is from " + D.formatDateTime(last) + " (" + D.ago(last) + ")." : "");
        card.empty.hidden = false;
      } else {
        card.summaryText =
          D.formatNumber(count) + (count === 1 ? " reading" : " readings") +
          " · min " + D.formatValue(min, metric) + " · max " + D.formatValue(max, metric) +
          " · avg " + D.formatValue(Math.round((sum / count) * 100) / 100, metric);
        card.empty.hidden = true;
      }
      if (!card.summary.classList.contains("hovering")) D.setText(card.summary, card.summaryText);
    }

    function renderTable() {
      updatePager();
      const rows = table.rows;
      const count = document.getElementById("history-count");
      if (table.error) D.setText(count, table.error);
      else if (!rows.length) D.setText(count, table.page === 1 ? "" : "No more readings");
      else if (table.page === 1 && !table.next) D.setText(count, D.formatNumber(rows.length) + (rows.length === 1 ? " reading" : " readings"));
      else {
        // Which rows of the window these are, counted from its newest reading.
        const first = table.before + 1;
        const last = table.before + rows.length;
        D.setText(count, D.formatNumber(first) + "–" + D.formatNumber(last) + (table.next ? ", newest first" : ", the oldest"));
      }
      count.classList.toggle("error-text", !!table.error);
      const key = rows.map((row) => row.t + "|" + row.metric + "|" + row.value).join(";");
      const body = document.querySelector("#history tbody");
      if (key === body.dataset.key && body.childElementCount) return;
      body.dataset.key = key;
      if (!rows.length) {
        body.replaceChildren(
          D.element("tr", { class: "empty-row" }, D.element("td", { colspan: "3", text: "No readings in " + windowText() + "." })),
        );
        return;
      }
      body.replaceChildren(
        ...rows.map(({ t, metric, value }) => {
          const info = D.metricInfo(metric);
          const label = D.element("span", { class: "metric-name" }, D.element("span", { class: "dot", "aria-hidden": "true" }), info.label);
          label.style.setProperty("--metric-color", info.color);
          return D.element(
            "tr",
            { dataset: { metric, ts: String(t) } },
            D.element("td", { dataset: { label: "Time" } }, D.element("time", { datetime: new Date(t * 1000).toISOString(), text: D.formatDateTime(t * 1000) })),
            D.element("td", { dataset: { label: "Metric" } }, label),
            D.element("td", { class: "num", dataset: { label: "Value", value: String(value) }, text: D.formatValue(value, metric) }),
          );
        }),
      );
    }

    // ---- CSV: the window's readings, following the API's Link: rel="next" page after page -------------
    const csv = { controller: null };
    const csvButton = document.getElementById("csv-download");
    const csvStatus = document.getElementById("csv-status");

    function showCsvStatus(text, failed) {
      csvStatus.hidden = false;
      csvStatus.classList.toggle("error-text", !!failed);
      D.setText(csvStatus, text);
    }

    function saveFile(blob, name) {
      const url = URL.createObjectURL(blob);
      const link = D.element("a", { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    }

    async function downloadCsv() {
      if (csv.controller) {
        csv.controller.abort(); // the button cancels the download under way
        return;
      }
      if (!latest || !choice) return;
      const range = currentRange(latest.last_updated);
      const filter = readingsFilter();
      const name = deviceId.replace(/[^A-Za-z0-9_.@-]/g, "_") + "-" + fileStamp(range.from) + "-" + fileStamp(range.to) + ".csv";
      const controller = (csv.controller = new AbortController());
      csvButton.textContent = "Cancel download";
      let target = base + "/history?" + historyQuery(range, filter.metric, { format: "csv", limit: CSV_PAGE });
      const parts = [];
      let header = null;
      let rows = 0;
      let pages = 0;
      showCsvStatus("Downloading… 0 readings");
      try {
        while (target) {
          const page = await D.getCsvPage(target, controller.signal);
          pages += 1;
          const lines = page.text.split(/\r?\n/).filter((line) => line !== "");
          if (!lines.length || !lines[0].startsWith("timestamp,")) {
            throw new D.ApiError("page " + pages + " does not start with the CSV header line", 200);
          }
          if (header == null) {
            header = lines[0];
            parts.push(header + "\n");
          }
          // Columns: timestamp,device_id,metric_type,value (ids and metric names hold no commas).
          const kept = filter.keep ? lines.slice(1).filter((line) => filter.keep.has(line.split(",")[2])) : lines.slice(1);
          if (kept.length) parts.push(kept.join("\n") + "\n");
          rows += kept.length;
          showCsvStatus("Downloading… " + D.formatNumber(rows) + " readings");
          if (!page.next && lines.length - 1 === CSV_PAGE) {
            // A full page without a readable Link: a proxy may have dropped the CORS header that lets
            // this page read it. Ask the same page as JSON rather than save part of the window silently.
            const same = await D.getJson(target.replace("format=csv", "format=json"));
            if (same.has_more) {
              throw new D.ApiError(
                "the API has more readings but this page cannot read its Link header; the API (or a proxy in front of it) must send Access-Control-Expose-Headers: Link",
                200,
              );
            }
          }
          target = page.next;
        }
        saveFile(new Blob(parts, { type: "text/csv" }), name);
        showCsvStatus("Saved " + D.formatNumber(rows) + (rows === 1 ? " reading" : " readings") + " as " + name + ".");
      } catch (error) {
        if (controller.signal.aborted) showCsvStatus("Download cancelled after " + D.formatNumber(rows) + " readings; nothing saved.");
        else {
          if (!(error instanceof D.ApiError)) console.error(error);
          showCsvStatus("Download stopped after " + D.formatNumber(rows) + " readings, nothing saved: " + error.message + ".", true);
        }
      } finally {
        csv.controller = null;
        csvButton.textContent = "Download CSV";
      }
    }

    // ---- controls -----------------------------------------------------------------------------------
    function choose(next) {
      choice = next;
      rangeEdited = false;
      document.getElementById("range-error").hidden = true;
      table.version += 1; // a page of the old window that is still on its way is dropped
      Object.assign(table, { page: 1, before: 0, next: null, rows: [], key: "", error: "" });
      renderWindow();
      for (const card of Object.values(cards)) {
        if (!card.root.hidden) D.setText(card.summary, (card.summaryText = "loading…"));
      }
      refreshNow();
    }

    document.getElementById("windows").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-window]");
      if (!button || (choice && button.dataset.window === choice.key)) return;
      const key = button.dataset.window;
      D.writeQuery({ window: key === D.config.defaultWindow ? "" : key, from: "", to: "" });
      choose({ key });
    });

    const rangeForm = document.getElementById("range");
    rangeForm.addEventListener("input", () => {
      rangeEdited = true;
    });
    rangeForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const from = parseLocalInput(document.getElementById("range-from").value);
      const to = parseLocalInput(document.getElementById("range-to").value);
      const problem = from == null || to == null ? "Give both a start and an end." : from >= to ? "The start must be before the end." : "";
      const error = document.getElementById("range-error");
      error.textContent = problem;
      error.hidden = !problem;
      if (problem) return;
      D.writeQuery({ window: "", from: new Date(from).toISOString(), to: new Date(to).toISOString() });
      choose({ key: "custom", from, to });
    });

    document.getElementById("page-older").addEventListener("click", showOlder);
    document.getElementById("page-newest").addEventListener("click", showNewest);
    csvButton.addEventListener("click", downloadCsv);

    // Charts follow their card's width (phones, resized windows, a scrollbar appearing).
    const resize = new ResizeObserver(() => {
      for (const card of Object.values(cards)) {
        if (card.chart && !card.root.hidden && card.box.clientWidth > 0) {
          const size = { width: chartWidth(card.box), height: chartHeight() };
          if (size.width !== card.chart.width || size.height !== card.chart.height) card.chart.setSize(size);
        }
      }
    });
    resize.observe(document.getElementById("charts"));

    poller = D.poll(load);
  };

  D.device(D.deviceIdFromLocation()); // the page's scripts come last in <body> (no inline script)
})();
