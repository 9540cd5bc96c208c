// The fleet server's HTTP API, with the token from sessionStorage on every call.
//
// Reads remember each path's ETag and body: a poll sends If-None-Match and a 304 costs the
// server one stamp query and the network a header (see fleet_server/console/page_cache.py).

const KEY = "edgefleet.token";
const cache = new Map();

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
  cache.clear();
}

let onUnauthorised = () => {};

/** What to do when the server refuses the token (401): the app shows the login form. */
export function whenUnauthorised(callback) {
  onUnauthorised = callback;
}

async function call(method, path, body, headers = {}) {
  const secret = token();
  const init = { method, headers: { ...headers }, cache: "no-store" };
  if (secret) init.headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the fleet server did not answer (${err.message})`);
  }
  if (response.status === 401) {
    onUnauthorised();
    throw new ApiError(401, "the server refused the token: log in again");
  }
  return response;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const payload = await response.json();
    if (payload.error) message = payload.error;
    else if (Array.isArray(payload.detail)) {
      message = payload.detail
        .map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`)
        .join("; ");
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

/**
 * GET a JSON document: {data, changed}. `changed` is false when the server answered 304 (the
 * cached body is returned), so a page re-renders only when something moved.
 */
export async function get(path) {
  const known = cache.get(path);
  const headers = known ? { "If-None-Match": known.etag } : {};
  const response = await call("GET", path, undefined, headers);
  if (response.status === 304 && known) return { data: known.data, changed: false };
  if (!response.ok) throw await errorOf(response);
  const data = await response.json();
  const etag = response.headers.get("ETag");
  if (etag) cache.set(path, { etag, data });
  return { data, changed: true };
}

/** POST, PUT or DELETE with a JSON body; the parsed reply, or an ApiError with the server's words. */
export async function send(method, path, body) {
  const response = await call(method, path, body);
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

/** GET an image (or any binary) as a data: URL: an <img> cannot send the token, and the CSP
 * allows images from 'self' and data: only. */
export async function dataUrl(path) {
  const response = await call("GET", path);
  if (!response.ok) throw await errorOf(response);
  const blob = await response.blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ApiError(0, "could not read the image"));
    reader.readAsDataURL(blob);
  });
}
