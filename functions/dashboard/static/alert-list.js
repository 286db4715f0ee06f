// Open alerts as a table, for the overview (every device) and the device page (one device), each row
// acknowledgeable. The rows are keyed by alert id and updated in place on every refresh, so a message
// under a row (why acknowledging failed) and the keyboard focus survive it.
//
// GET /api/alerts lists the alerts the signed-in key may read; acknowledging is POST
// /api/alerts/<id>/ack, which needs an admin credential when auth is on: a read key's 403 is said in the
// row, with what to do about it.
(function () {
  "use strict";
  const D = window.IotDashboard;

  const OPEN_PAGE = 1000; // the API's largest page of alerts

  // The open alerts, newest first: { alerts, more } (``more``: there are more than one page holds).
  D.fetchOpenAlerts = async function fetchOpenAlerts(deviceId) {
    const params = new URLSearchParams({ state: "open", limit: String(OPEN_PAGE) });
    if (deviceId) params.set("device_id", deviceId);
    const body = await D.getJson("/api/alerts?" + params.toString());
    if (!Array.isArray(body.alerts)) throw new D.ApiError("the answer has no list of alerts", 200);
    return { alerts: body.alerts, more: !!body.has_more };
  };

  // What an alert is about: its metric, or "no data" for a no-data rule's alert (it has no metric).
  D.alertMetricText = function alertMetricText(alert) {
    return alert.metric_type ? D.metricInfo(alert.metric_type).label : "No data";
  };

  // The value that opened the alert; a no-data alert's value is the seconds the device had been silent.
  D.alertValueText = function alertValueText(alert) {
    if (typeof alert.value !== "number") return "—";
    return alert.metric_type ? D.formatValue(alert.value, alert.metric_type) : "silent " + D.formatDuration(alert.value);
  };

  // Why acknowledging failed, as the reader can act on it.
  function ackFailure(error) {
    if (error.status === 403) {
      return "Acknowledging needs an admin key: this tab's key may only read. Sign out and sign in with an admin key.";
    }
    if (error.status === 404) return "This alert no longer exists (its rule was deleted).";
    return "Not acknowledged: " + error.message + ".";
  }

  // ``tbody``: the table body to fill. ``withDevice``: a first column naming the device (the overview).
  // ``onChange``: called after an acknowledgement, to refresh the page's other views at once.
  D.alertTable = function alertTable(tbody, { withDevice, onChange } = {}) {
    const rows = new Map(); // alert id -> { tr, parts, alert }
    const problems = new Map(); // alert id -> the message under its button
    const pending = new Set(); // alert ids being acknowledged

    async function acknowledge(id) {
      const row = rows.get(id);
      if (!row || pending.has(id)) return;
      pending.add(id);
      problems.delete(id);
      update(row);
      try {
        const acknowledged = await D.sendJson("POST", "/api/alerts/" + encodeURIComponent(id) + "/ack");
        row.alert = { ...row.alert, ...acknowledged };
      } catch (error) {
        if (!(error instanceof D.ApiError)) console.error(error);
        problems.set(id, ackFailure(error));
      } finally {
        pending.delete(id);
        update(row);
      }
      if (!problems.has(id) && onChange) onChange();
    }

    function newRow(alert) {
      const parts = {
        since: D.element("time", { class: "muted" }),
        opened: D.element("span"),
        value: D.element("td", { class: "num", dataset: { label: "Value" } }),
        ack: D.element("td", { class: "cell-ack", dataset: { label: "Acknowledged" } }),
        button: D.element("button", { type: "button", class: "button ack-button" }, "Acknowledge"),
        acknowledged: D.element("span", { class: "acknowledged" }),
        problem: D.element("p", { class: "error-text ack-error", role: "alert" }),
      };
      parts.button.addEventListener("click", () => acknowledge(alert.id));
      parts.ack.append(parts.button, parts.acknowledged, parts.problem);
      const tr = D.element("tr", { dataset: { alertId: String(alert.id), deviceId: alert.device_id } });
      if (withDevice) {
        tr.append(
          D.element(
            "td",
            { dataset: { label: "Device" } },
            D.element("a", { href: D.deviceHref(alert.device_id), class: "device-link" }, alert.device_id),
          ),
        );
      }
      const metric = D.element("span", { class: "metric-name" }, D.element("span", { class: "dot", "aria-hidden": "true" }), D.alertMetricText(alert));
      if (alert.metric_type) metric.style.setProperty("--metric-color", D.metricInfo(alert.metric_type).color);
      tr.append(
        D.element("td", { class: "cell-metric", dataset: { label: "Metric" } }, metric),
        D.element("td", { class: "cell-rule", dataset: { label: "Rule" }, text: alert.rule_name }),
        D.element("td", { class: "cell-since", dataset: { label: "Since" } }, parts.opened, " (", parts.since, ")"),
        parts.value,
        parts.ack,
      );
      return { tr, parts, alert };
    }

    function update(row) {
      const { parts, alert } = row;
      const opened = D.parseTime(alert.opened_at);
      D.setText(parts.opened, D.formatDateTime(opened));
      D.setSince(parts.since, opened);
      D.setText(parts.value, D.alertValueText(alert));
      const acknowledgedAt = D.parseTime(alert.acknowledged_at);
      parts.button.hidden = acknowledgedAt != null;
      parts.button.disabled = pending.has(alert.id);
      D.setText(parts.button, pending.has(alert.id) ? "Acknowledging…" : "Acknowledge");
      parts.acknowledged.hidden = acknowledgedAt == null;
      if (acknowledgedAt != null) {
        D.setText(parts.acknowledged, "✓ " + (alert.acknowledged_by || "acknowledged") + ", " + D.ago(acknowledgedAt));
        parts.acknowledged.title = "Acknowledged by " + (alert.acknowledged_by || "?") + " at " + D.formatFullDateTime(acknowledgedAt);
      }
      const problem = problems.get(alert.id) || "";
      D.setText(parts.problem, problem);
      parts.problem.hidden = !problem;
      row.tr.dataset.acknowledged = String(acknowledgedAt != null);
    }

    // ``alerts``: the API's open alerts, newest first.
    function render(alerts) {
      const seen = new Set();
      alerts.forEach((alert, index) => {
        let row = rows.get(alert.id);
        if (!row) {
          row = newRow(alert);
          rows.set(alert.id, row);
        }
        // An acknowledgement under way answers for itself; the listing may predate it.
        if (!pending.has(alert.id)) row.alert = alert.acknowledged_at || !row.alert.acknowledged_at ? alert : row.alert;
        update(row);
        seen.add(alert.id);
        if (tbody.children[index] !== row.tr) tbody.insertBefore(row.tr, tbody.children[index] || null);
      });
      for (const [id, row] of rows) {
        if (!seen.has(id)) {
          row.tr.remove();
          rows.delete(id);
          problems.delete(id);
        }
      }
    }

    return { render };
  };
})();
