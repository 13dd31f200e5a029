/* CreditCraft's pages: the session token on every request, navigation between pages, and the
   forms that call the JSON API. Small on purpose: no build step, no framework. Every page's
   data is already in its HTML; this file only adds behaviour.

   For other pages' scripts: window.CreditCraft = {sessionToken, api, apiFetch, navigate,
   reloadPage}.

   Markup it acts on (templates/app/macros.html writes it):
     a[data-app-link]            navigate with a fresh token (without JS: through the bounce)
     form[data-app-form]         a GET form (search): same, with the form's fields
     form[data-api-form]         sent to data-api-path (JSON, or multipart when
                                 data-api-encoding="multipart") with an Idempotency-Key made
                                 once per display; data-confirm asks first; on success the page
                                 reloads (data-next-param set to the answer's data-next-value);
                                 data-api-method="PUT" or "DELETE" (no body) instead of POST
     [data-error-for=<field>]    where the API's message about <field> goes ([data-form-error]
                                 for the rest)
     input[data-as=end-of-day]   a date sent as the end of that day in data-timezone
     input[data-as=integer]      a whole number sent as a JSON number (anything else as typed,
                                 for the API to name); data-empty="null": left empty, sent as
                                 null rather than left out
     input[type=checkbox]        sent as true or false
     select[data-preset-picker]  fills in the issue form from the chosen preset
     #bulk-progress              polled while its import is issuing
     [data-download]             a file behind the session token, saved through a Blob URL
*/
"use strict";

(function () {
  const RETRY_HEADER = "X-Shopify-Retry-Invalid-Session-Request";
  const POLL_MS = 1000;
  // Errors whose details name no field, but whose field is plain from the code.
  const FIELD_OF_CODE = {
    invalid_amount: "amount",
    insufficient_funds: "amount",
    unknown_currency: "currency",
    currency_mismatch: "currency",
    invalid_expiry: "expires_at",
  };

  function appBridge() {
    const bridge = window.shopify;
    return bridge && typeof bridge.idToken === "function" ? bridge : null;
  }

  /** A session token: a fresh one from App Bridge inside Shopify admin; else the verified
      token the server rendered into this page (dev login, or App Bridge unreachable). */
  async function sessionToken() {
    const bridge = appBridge();
    if (bridge) return bridge.idToken();
    const meta = document.querySelector('meta[name="creditcraft-session-token"]');
    return meta ? meta.content : "";
  }

  /** fetch() with the session token; a 401 that asks for it is retried once with a fresh
      token. options: method, headers, body, or json (an object sent as JSON). */
  async function apiFetch(path, options = {}) {
    const send = async () => {
      const headers = new Headers(options.headers || {});
      headers.set("Authorization", "Bearer " + (await sessionToken()));
      if (!headers.has("Accept")) headers.set("Accept", "application/json");
      let body = options.body;
      if (options.json !== undefined) {
        headers.set("Content-Type", "application/json");
        body = JSON.stringify(options.json);
      }
      const method = options.method || (body === undefined ? "GET" : "POST");
      return fetch(path, { method, headers, body, credentials: "same-origin" });
    };
    let response = await send();
    if (response.status === 401 && response.headers.get(RETRY_HEADER)) response = await send();
    return response;
  }

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message);
      this.status = status;
      this.error = error;
    }
  }

  /** apiFetch, JSON in and out. A failure throws ApiError; with options.form, its message is
      shown in that form first (beside the field it names). */
  async function api(path, options = {}) {
    const response = await apiFetch(path, options);
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : null;
    if (response.ok) return data;
    const error = (data && data.error) || {
      code: "http_" + response.status,
      message:
        response.status >= 500
          ? "Something went wrong on our side. Try again: a request sent twice is applied once."
          : "The request was refused (HTTP " + response.status + ").",
      details: {},
    };
    if (options.form) showError(options.form, error);
    throw new ApiError(response.status, error);
  }

  // -- navigation ---------------------------------------------------------------------------

  function withToken(href, token) {
    const url = new URL(href, location.href);
    url.searchParams.set("id_token", token);
    return url.pathname + url.search + url.hash;
  }

  /** Go to another page of the app with a fresh token. */
  async function navigate(href) {
    location.assign(withToken(href, await sessionToken()));
  }

  /** This page again, with a fresh token and ``params`` set. */
  async function reloadPage(params = {}) {
    const url = new URL(location.href);
    url.searchParams.delete("id_token");
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
    await navigate(url.href);
  }

  function plainClick(event) {
    return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
  }

  // Capture phase: before App Bridge or anything else handles the click.
  document.addEventListener(
    "click",
    (event) => {
      const link = event.target.closest("a[data-app-link]");
      if (!link || event.defaultPrevented || !plainClick(event)) return;
      event.preventDefault();
      navigate(link.href).catch(() => location.assign(link.href)); // the bounce fetches one
    },
    true,
  );

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.matches("form[data-app-form]")) {
      event.preventDefault();
      const url = new URL(form.getAttribute("action") || location.href, location.href);
      url.search = new URLSearchParams(new FormData(form)).toString();
      navigate(url.href);
    } else if (form.matches("form[data-api-form]")) {
      event.preventDefault();
      submitApiForm(form);
    }
  });

  // -- forms that call the API --------------------------------------------------------------

  function newKey() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function submitApiForm(form) {
    if (form.dataset.busy === "true") return; // a double click sends once
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    clearErrors(form);
    setBusy(form, true);
    try {
      const method = form.dataset.apiMethod || "POST";
      const data = await api(form.dataset.apiPath, {
        method,
        form,
        headers: { "Idempotency-Key": form.dataset.idempotencyKey },
        ...(method === "DELETE" ? {} : requestBody(form)),
      });
      const params = {};
      if (form.dataset.nextParam) params[form.dataset.nextParam] = pick(data, form.dataset.nextValue);
      await reloadPage(params);
    } catch (error) {
      if (error instanceof ApiError && error.status < 500) {
        // A definite answer: the corrected form is a new request (the old key keeps its answer).
        form.dataset.idempotencyKey = newKey();
      } else if (!(error instanceof ApiError)) {
        showError(form, { message: "CreditCraft could not be reached. Try again.", details: {} });
      }
      setBusy(form, false);
    }
  }

  function requestBody(form) {
    if (form.dataset.apiEncoding === "multipart") return { body: new FormData(form) };
    const json = {};
    for (const element of form.elements) {
      if (!element.name || element.disabled || ["submit", "button"].includes(element.type)) continue;
      if (element.type === "checkbox") {
        json[element.name] = element.checked;
        continue;
      }
      const value = element.value.trim();
      if (value === "") {
        if (element.dataset.empty === "null") json[element.name] = null;
        continue; // optional fields left empty are left out
      }
      json[element.name] = fieldValue(element, value);
    }
    return { json };
  }

  function fieldValue(element, value) {
    if (element.dataset.as === "end-of-day") return endOfDay(value, element.dataset.timezone);
    if (element.dataset.as === "integer" && /^[0-9]{1,15}$/.test(value)) return Number(value);
    return value;
  }

  function pick(data, path) {
    return (path || "").split(".").reduce((value, key) => (value == null ? value : value[key]), data);
  }

  function setBusy(form, busy) {
    form.dataset.busy = busy ? "true" : "false";
    for (const button of form.querySelectorAll('[type="submit"]')) {
      button.disabled = busy;
      button.setAttribute("aria-busy", busy ? "true" : "false");
    }
  }

  function clearErrors(form) {
    for (const slot of form.querySelectorAll("[data-error-for], [data-form-error]")) {
      slot.textContent = "";
      slot.hidden = true;
    }
    for (const input of form.querySelectorAll('[aria-invalid="true"]')) input.removeAttribute("aria-invalid");
    const list = form.querySelector("[data-file-errors]");
    if (list) {
      list.replaceChildren();
      list.hidden = true;
    }
  }

  function showError(form, error) {
    const details = error.details || {};
    const field =
      details.field || (Array.isArray(details.fields) && details.fields[0]) || FIELD_OF_CODE[error.code];
    const slot = field ? form.querySelector('[data-error-for="' + CSS.escape(field) + '"]') : null;
    if (slot) {
      slot.textContent = error.message;
      slot.hidden = false;
      const input = form.elements.namedItem(field);
      if (input && input.setAttribute) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    } else {
      const box = form.querySelector("[data-form-error]");
      box.textContent = error.message;
      box.hidden = false;
    }
    showFileErrors(form, details.report);
  }

  /** A CSV refused whole (422) comes with the dry-run report: list what it says. */
  function showFileErrors(form, report) {
    const list = form.querySelector("[data-file-errors]");
    if (!list || !report) return;
    const problems = [];
    if (report.file_error && report.file_error.message) problems.push(report.file_error.message);
    for (const error of report.errors || []) problems.push("Row " + error.row + ": " + error.message);
    for (const text of problems.slice(0, 50)) {
      const item = document.createElement("li");
      item.textContent = text; // never innerHTML: the file's content is not ours
      list.append(item);
    }
    list.hidden = problems.length === 0;
  }

  /** The UTC instant (ISO) at which ``day`` (YYYY-MM-DD) ends in ``timeZone`` (the browser's
      zone when none is given or it is unknown). */
  function endOfDay(day, timeZone) {
    const [year, month, date] = day.split("-").map(Number);
    const local = new Date(year, month - 1, date, 23, 59, 59);
    if (!timeZone) return local.toISOString();
    try {
      const wall = Date.UTC(year, month - 1, date, 23, 59, 59);
      const first = wall - offsetAt(wall, timeZone);
      return new Date(wall - offsetAt(first, timeZone)).toISOString(); // the offset then (DST)
    } catch (error) {
      return local.toISOString();
    }
  }

  function offsetAt(instant, timeZone) {
    const parts = {};
    const format = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    for (const part of format.formatToParts(new Date(instant))) parts[part.type] = part.value;
    const asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    return asUtc - Math.floor(instant / 1000) * 1000;
  }

  document.addEventListener("change", (event) => {
    const picker = event.target.closest("select[data-preset-picker]");
    const option = picker && picker.selectedOptions[0];
    if (!option || !option.value) return;
    const fields = {
      amount: option.dataset.amount,
      currency: option.dataset.currency,
      expires_at: option.dataset.expiresOn,
      reason: option.dataset.reason,
      source: option.dataset.source,
    };
    for (const [name, value] of Object.entries(fields)) {
      const input = picker.form.elements.namedItem(name);
      if (input && value !== undefined) input.value = value;
    }
  });

  // -- bulk imports: progress and the result file ---------------------------------------------

  function watchProgress(box) {
    if (box.dataset.state !== "issuing") return;
    const tick = async () => {
      try {
        const found = (await api("/api/bulk-imports/" + encodeURIComponent(box.dataset.importId))).bulk_import;
        box.querySelector("progress").value = found.percent;
        box.dataset.percent = found.percent;
        const counts = { percent: found.percent, issued: found.rows.issued, failed: found.rows.failed, pending: found.rows.pending };
        for (const [name, value] of Object.entries(counts)) {
          const slot = box.querySelector('[data-progress="' + name + '"]');
          if (slot) slot.textContent = String(value);
        }
        if (found.state !== "issuing") {
          box.dataset.state = found.state;
          await reloadPage(); // the finished page: result download, final counts
          return;
        }
      } catch (error) {
        // A blip (network, a token refused once): the next tick tries again.
      }
      setTimeout(tick, POLL_MS);
    };
    setTimeout(tick, POLL_MS / 2);
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-download]");
    if (!button) return;
    event.preventDefault();
    const slot = button.parentElement.querySelector("[data-download-error]");
    if (slot) slot.hidden = true;
    try {
      const response = await apiFetch(button.dataset.download, { headers: { Accept: "text/csv" } });
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        throw new Error((data && data.error && data.error.message) || "HTTP " + response.status);
      }
      const url = URL.createObjectURL(await response.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = button.dataset.filename || "download.csv";
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (error) {
      if (slot) {
        slot.textContent = "The download failed: " + error.message;
        slot.hidden = false;
      }
    }
  });

  // -- on load ---------------------------------------------------------------------------------

  function start() {
    if (appBridge()) document.body.classList.add("app-bridge");
    for (const form of document.querySelectorAll("form[data-api-form]")) {
      form.dataset.idempotencyKey = newKey(); // once per display of the form
    }
    const progress = document.getElementById("bulk-progress");
    if (progress) watchProgress(progress);
  }

  window.CreditCraft = { sessionToken, api, apiFetch, navigate, reloadPage };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
