// The overview page: every device with its latest value per metric, its status and counts.
// Rows are keyed by device and updated in place, so refreshing keeps the scroll position, the
// filters, the sort order and any text selection.
//
// The whole fleet is loaded (page after page of /api/devices) and searched, filtered, sorted and
// counted in memory; the table holds the first ROWS_STEP matching rows and grows by as many with
// "Show more". A table of ten thousand rows takes the browser seconds to lay out, on every refresh.
(function () {
  "use strict";
  const D = window.IotDashboard;

  const DEVICES_PAGE = 1000; // the API's largest page of devices
  const ROWS_STEP = 500;
  const collator = new Intl.Collator(); // localeCompare's order, far faster than calling it per pair

  D.overview = function overview() {
    const table = document.getElementById("devices");
    const headRow = table.tHead.rows[0];
    const body = table.tBodies[0];
    const search = document.getElementById("search");
    const statusFilter = document.getElementById("status-filter");
    const sortSelect = document.getElementById("sort");
    const loadingText = document.getElementById("loading-text");
    const showMore = document.getElementById("show-more");
    const rows = new Map(); // device id -> <tr>
    let devices = [];
    let columns = null; // metric columns, in order
    let loaded = false;
    let rowLimit = ROWS_STEP;

    const query = D.readQuery();
    search.value = query.get("q") || "";
    statusFilter.value = ["online", "stale", "offline", "problem"].includes(query.get("status")) ? query.get("status") : "";
    const sort = parseSort(query.get("sort")) || { key: "device", dir: 1 };

    document.getElementById("thresholds").textContent =
      "Stale after " + D.formatDuration(D.config.staleAfterSeconds) + " without a reading, offline after " +
      D.formatDuration(D.config.offlineAfterSeconds) + ". Refreshes every " + D.config.refreshSeconds + " s.";
    document.getElementById("ingest-url").textContent = D.absoluteApiUrl("/api/device/data");
    // `make demo-data` sends to http://127.0.0.1:8080 (`make run`) unless told another URL: this API's.
    const api = D.absoluteApiUrl("");
    document.getElementById("demo-command").textContent =
      "make demo-data" + (api === "http://127.0.0.1:8080" ? "" : " URL=" + api);

    function parseSort(text) {
      const match = /^([\w-]+):(asc|desc)$/.exec(text || "");
      return match ? { key: match[1], dir: match[2] === "asc" ? 1 : -1 } : null;
    }

    function sortName(key) {
      if (key === "device") return "Device ID";
      if (key === "status") return "Status";
      if (key === "last") return "Last reported";
      return D.metricInfo(key).label;
    }

    function sortOptions() {
      const options = [
        ["device:asc", "Device ID, A–Z"],
        ["device:desc", "Device ID, Z–A"],
        ["status:desc", "Problems first"],
        ["last:desc", "Most recently reported"],
        ["last:asc", "Least recently reported"],
      ];
      for (const metric of columns || []) {
        const label = D.metricInfo(metric).label;
        options.push([metric + ":desc", label + ", highest first"], [metric + ":asc", label + ", lowest first"]);
      }
      const current = sort.key + ":" + (sort.dir > 0 ? "asc" : "desc");
      if (!options.some(([value]) => value === current)) {
        options.push([current, sortName(sort.key) + (sort.dir > 0 ? ", ascending" : ", descending")]);
      }
      sortSelect.replaceChildren(...options.map(([value, text]) => D.element("option", { value, text })));
      sortSelect.value = current;
    }

    function buildHead() {
      const cells = [
        ["device", "Device"],
        ["status", "Status"],
        ["last", "Last reported"],
        ...columns.map((metric) => [metric, D.metricInfo(metric).label]),
      ].map(([key, label]) => {
        const button = D.element("button", { type: "button", class: "sort-button", dataset: { sort: key } }, label);
        const unit = D.metricInfo(key).unit;
        if (columns.includes(key) && unit) button.append(D.element("span", { class: "unit", text: unit }));
        return D.element("th", { scope: "col", class: columns.includes(key) ? "num" : null, dataset: { sort: key } }, button);
      });
      headRow.replaceChildren(...cells);
      markSortedHeader();
    }

    function markSortedHeader() {
      for (const th of headRow.cells) {
        const sorted = th.dataset.sort === sort.key;
        if (sorted) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
        else th.removeAttribute("aria-sort");
      }
    }

    function newRow(device) {
      const tr = D.element("tr", { dataset: { deviceId: device.device_id } });
      const link = D.element("a", { href: D.deviceHref(device.device_id), class: "device-link" }, device.device_id);
      tr.append(
        D.element("td", { class: "cell-device", dataset: { label: "Device" } }, link),
        D.element("td", { class: "cell-status", dataset: { label: "Status" } }, D.element("span", { class: "badge" })),
        D.element("td", { class: "cell-last", dataset: { label: "Last reported" } }, D.element("time")),
      );
      for (const metric of columns) {
        tr.append(D.element("td", { class: "num cell-metric", dataset: { metric, label: D.metricInfo(metric).label } }));
      }
      return tr;
    }

    // A row is rewritten only when what it shows changed: with thousands of devices, a refresh then
    // touches the few that reported rather than every cell ("… ago" texts keep themselves current).
    const shownAs = new WeakMap(); // <tr> -> what it shows
    function updateRow(tr, device) {
      const last = device.lastMs;
      const status = device.status;
      const readings = columns.map((metric) => {
        const reading = device.metrics[metric];
        return reading ? reading.value + "@" + reading.timestamp : "";
      });
      const signature = status + "|" + device.last_updated + "|" + readings.join("|");
      if (shownAs.get(tr) === signature) return;
      shownAs.set(tr, signature);
      tr.dataset.status = status;
      D.setStatusBadge(tr.cells[1].firstChild, status, last);
      D.setSince(tr.cells[2].firstChild, last);
      columns.forEach((metric, index) => {
        const cell = tr.cells[3 + index];
        const reading = device.metrics[metric];
        if (reading) {
          const text = D.formatValue(reading.value, metric);
          D.setText(cell, text);
          cell.dataset.value = String(reading.value);
          cell.title = D.metricInfo(metric).label + " " + text + " at " + D.formatDateTime(D.parseTime(reading.timestamp));
          cell.classList.remove("missing");
        } else {
          D.setText(cell, "—");
          delete cell.dataset.value;
          cell.title = "This device has not reported " + metric;
          cell.classList.add("missing");
        }
      });
    }

    function sortValue(device) {
      if (sort.key === "device") return device.device_id;
      if (sort.key === "last") return device.lastMs;
      if (sort.key === "status") return D.STATUS_RANK[device.status];
      const reading = device.metrics[sort.key];
      return reading && typeof reading.value === "number" ? reading.value : null;
    }

    function compare(a, b) {
      const x = sortValue(a);
      const y = sortValue(b);
      if (x !== y) {
        if (x == null) return 1; // missing values last, whichever the direction
        if (y == null) return -1;
        const order = typeof x === "string" ? collator.compare(x, y) : x - y;
        if (order) return order * sort.dir;
      }
      return collator.compare(a.device_id, b.device_id);
    }

    // The search text and the status filter, as a test of one device.
    function deviceFilter() {
      const text = search.value.trim().toLowerCase();
      const wanted = statusFilter.value;
      return (device) => {
        if (text && !device.device_id.toLowerCase().includes(text)) return false;
        if (!wanted) return true;
        if (wanted === "problem") return device.status === "stale" || device.status === "offline";
        return device.status === wanted;
      };
    }

    function render() {
      const now = Date.now();
      const metrics = D.sortMetrics(devices.flatMap((device) => Object.keys(device.metrics)));
      if (!columns || metrics.join() !== columns.join()) {
        columns = metrics;
        rows.clear();
        body.replaceChildren();
        buildHead();
        sortOptions();
      }
      const counts = { online: 0, stale: 0, offline: 0, unknown: 0 };
      for (const device of devices) {
        device.status = D.deviceStatus(device.lastMs, now);
        counts[device.status] += 1;
      }
      const matching = devices.filter(deviceFilter()).sort(compare);
      const visible = matching.slice(0, rowLimit);
      const seen = new Set();
      visible.forEach((device, index) => {
        let tr = rows.get(device.device_id);
        if (!tr) {
          tr = newRow(device);
          rows.set(device.device_id, tr);
        }
        updateRow(tr, device);
        seen.add(device.device_id);
        if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
      });
      for (const [id, tr] of rows) {
        if (!seen.has(id)) {
          tr.remove();
          rows.delete(id);
        }
      }
      showStates(matching.length, visible.length);
      D.setText(document.getElementById("count-devices"), D.formatNumber(devices.length));
      for (const status of ["online", "stale", "offline"]) {
        D.setText(document.getElementById("count-" + status), D.formatNumber(counts[status]));
      }
    }

    function showStates(matching, visible) {
      if (loaded) document.getElementById("loading").hidden = true;
      document.getElementById("empty").hidden = !loaded || devices.length > 0;
      document.getElementById("no-match").hidden = !loaded || devices.length === 0 || matching > 0;
      table.hidden = !loaded || matching === 0;
      const filtered = search.value.trim() !== "" || statusFilter.value !== "";
      D.setText(
        document.getElementById("shown-count"),
        !loaded || devices.length === 0
          ? ""
          : filtered
            ? "Showing " + D.formatNumber(matching) + " of " + D.formatNumber(devices.length)
            : D.formatNumber(devices.length) + " devices",
      );
      const more = document.getElementById("more");
      more.hidden = visible >= matching;
      if (!more.hidden) {
        D.setText(showMore, "Show " + D.formatNumber(Math.min(ROWS_STEP, matching - visible)) + " more");
        D.setText(document.getElementById("more-count"), D.formatNumber(visible) + " of " + D.formatNumber(matching) + " listed");
      }
    }

    function filtersChanged() {
      D.writeQuery({ q: search.value.trim(), status: statusFilter.value });
      rowLimit = ROWS_STEP;
      if (loaded) render();
    }

    function setSort(next) {
      sort.key = next.key;
      sort.dir = next.dir;
      D.writeQuery({ sort: sort.key === "device" && sort.dir > 0 ? "" : sort.key + ":" + (sort.dir > 0 ? "asc" : "desc") });
      if (columns) {
        sortOptions();
        markSortedHeader();
        render();
      }
    }

    sortOptions();
    search.addEventListener("input", filtersChanged);
    statusFilter.addEventListener("change", filtersChanged);
    sortSelect.addEventListener("change", () => setSort(parseSort(sortSelect.value)));
    headRow.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-sort]");
      if (!button) return;
      const key = button.dataset.sort;
      setSort(key === sort.key ? { key, dir: -sort.dir } : { key, dir: key === "device" ? 1 : -1 });
    });
    showMore.addEventListener("click", () => {
      rowLimit += ROWS_STEP;
      render();
    });
    document.getElementById("clear-filters").addEventListener("click", () => {
      search.value = "";
      statusFilter.value = "";
      filtersChanged();
    });

    function showStat(id, value) {
      D.setText(document.getElementById(id), typeof value === "number" ? D.formatNumber(value) : "–");
    }

    // Every device, following the API's pages (device-id order, at most DEVICES_PAGE each) until it
    // says there are no more. The first load says how far it has got; the rows appear once all are in,
    // so sorting and the counts are never of a partial fleet.
    async function fetchAllDevices() {
      const all = [];
      const cursors = new Set();
      let cursor = null;
      for (;;) {
        const body = await D.getJson("/api/devices?limit=" + DEVICES_PAGE + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
        if (!Array.isArray(body.devices)) throw new D.ApiError("the answer has no list of devices", 200);
        for (const device of body.devices) {
          all.push({ ...device, metrics: device.metrics || {}, lastMs: D.parseTime(device.last_updated) });
        }
        if (!body.has_more || !body.next_cursor) return all;
        if (cursors.has(body.next_cursor)) throw new D.ApiError("the API handed out the same page cursor twice", 200);
        cursors.add(body.next_cursor);
        cursor = body.next_cursor;
        if (!loaded) D.setText(loadingText, "Loading devices… " + D.formatNumber(all.length) + " so far");
      }
    }

    // ---- open alerts: counted in the summary and listed above the devices -------------------------
    let poller = null;
    const alertRows = D.alertTable(document.querySelector("#alerts tbody"), {
      withDevice: true,
      onChange: () => poller && poller.now(),
    });

    // ``settled``: the Promise.allSettled outcome of D.fetchOpenAlerts().
    function showAlerts(settled) {
      const section = document.getElementById("open-alerts");
      const stat = document.getElementById("stat-alerts");
      const state = document.getElementById("alerts-state");
      const alertTable = document.getElementById("alerts");
      if (settled.status === "rejected") {
        if (settled.reason && settled.reason.status === 404) {
          // An API without alerts: no section, rather than an error on every refresh.
          section.hidden = true;
          stat.hidden = true;
          return;
        }
        state.hidden = false;
        state.classList.add("error-text");
        D.setText(state, "Alerts could not be loaded: " + (settled.reason ? settled.reason.message : "no answer") + ".");
        return;
      }
      const { alerts, more } = settled.value;
      section.hidden = false;
      stat.hidden = false;
      stat.classList.toggle("stat-alerting", alerts.length > 0);
      D.setText(document.getElementById("count-alerts"), D.formatNumber(alerts.length) + (more ? "+" : ""));
      alertRows.render(alerts);
      alertTable.hidden = alerts.length === 0;
      state.classList.remove("error-text");
      state.hidden = alerts.length > 0 && !more;
      D.setText(
        state,
        alerts.length === 0
          ? "No open alerts."
          : "The newest " + D.formatNumber(alerts.length) + " open alerts are listed; there are more.",
      );
    }

    async function load() {
      const [list, stats, pipeline, openAlerts] = await Promise.allSettled([
        fetchAllDevices(),
        D.getJson("/api/stats"),
        D.getJson("/api/pipeline"),
        D.fetchOpenAlerts(),
      ]);
      D.showPipeline(pipeline);
      showAlerts(openAlerts);
      if (stats.status === "fulfilled") {
        showStat("count-today", stats.value.readings_today);
        showStat("count-rejected", stats.value.rejected_messages);
        document.getElementById("stat-today").hidden = typeof stats.value.readings_today !== "number";
        document.getElementById("stat-rejected").hidden = typeof stats.value.rejected_messages !== "number";
      } else if (stats.reason.status === 404) {
        // An API without /api/stats: leave those two counts out rather than show an error.
        document.getElementById("stat-today").hidden = true;
        document.getElementById("stat-rejected").hidden = true;
      }
      if (list.status === "rejected") throw list.reason;
      devices = list.value;
      loaded = true;
      render();
    }

    poller = D.poll(load);
  };

  D.overview(); // the page's scripts come last in <body>: the elements are there (no inline script)
})();
