// Where the dashboard finds the API. Empty means "the same origin as this page" (the shim, or the
// dashboard function behind APIG). From an OBS static website set the APIG URL, e.g.
// window.IOT_CONFIG = { apiBase: "https://<group>.apic.<region>.huaweicloudapis.com" };
window.IOT_CONFIG = { apiBase: "", refreshSeconds: 5 };
