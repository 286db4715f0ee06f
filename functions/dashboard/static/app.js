// The plain dashboard: fetches the JSON API and renders tables, refreshing in place.
(function () {
  "use strict";
  var config = window.IOT_CONFIG || {};
  var base = (config.apiBase || "").replace(/\/$/, "");
  var every = Math.max(1, Number(config.refreshSeconds) || 5) * 1000;
  var units = { temperature: "°C", humidity: "%", pressure: "hPa", voltage: "V", current: "A", power: "W" };

  function getJson(path) {
    return fetch(base + path, { headers: { Accept: "application/json" } }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) { throw new Error(body.error || ("HTTP " + response.status)); }
        return body;
      });
    });
  }

  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }
  function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
  function show(value, metric) { return String(value) + (units[metric] ? " " + units[metric] : ""); }
  function status(text, isError) {
    var node = document.getElementById("status");
    node.textContent = text;
    node.className = "status" + (isError ? " error" : "");
  }
  function poll(load) {
    function tick() {
      load().then(function () { status("Updated " + new Date().toLocaleTimeString()); })
        .catch(function (error) { status("Cannot reach the API: " + error.message, true); })
        .then(function () { setTimeout(tick, every); });
    }
    tick();
  }

  function overview() {
    poll(function () {
      return getJson("/api/devices").then(function (body) {
        var table = document.getElementById("devices");
        var rows = document.createDocumentFragment();
        body.devices.forEach(function (device) {
          var tr = document.createElement("tr");
          tr.dataset.deviceId = device.device_id;
          var name = document.createElement("td");
          var link = document.createElement("a");
          link.href = "/device/" + encodeURIComponent(device.device_id);
          link.textContent = device.device_id;
          name.appendChild(link);
          var metrics = document.createElement("td");
          Object.keys(device.metrics).sort().forEach(function (metric) {
            var span = document.createElement("span");
            span.className = "metric";
            span.dataset.metric = metric;
            span.innerHTML = "<b></b> ";
            span.firstChild.textContent = metric + ":";
            span.appendChild(document.createTextNode(show(device.metrics[metric].value, metric)));
            metrics.appendChild(span);
          });
          tr.append(name, metrics, cell(when(device.last_updated)));
          rows.appendChild(tr);
        });
        table.tBodies[0].replaceChildren(rows);
        table.hidden = body.devices.length === 0;
        document.getElementById("empty").hidden = body.devices.length !== 0;
      });
    });
  }

  function device(deviceId) {
    document.getElementById("title").textContent = deviceId;
    document.title = deviceId + " · IoT devices";
    var path = "/api/device/" + encodeURIComponent(deviceId);
    poll(function () {
      return Promise.all([getJson(path + "/latest"), getJson(path + "/history?limit=50")]).then(function (both) {
        var latest = document.createDocumentFragment();
        both[0].data.forEach(function (item) {
          var tr = document.createElement("tr");
          tr.append(cell(item.metric_type), cell(show(item.value, item.metric_type)), cell(when(item.timestamp)));
          latest.appendChild(tr);
        });
        document.querySelector("#latest tbody").replaceChildren(latest);
        var history = document.createDocumentFragment();
        both[1].data.forEach(function (item) {
          var tr = document.createElement("tr");
          tr.append(cell(when(item.timestamp)), cell(item.metric_type), cell(show(item.value, item.metric_type)));
          history.appendChild(tr);
        });
        document.querySelector("#history tbody").replaceChildren(history);
      });
    });
  }

  window.IotDashboard = { overview: overview, device: device };
})();
