// The console's only way to the network: same-origin JSON calls with the bearer credential.
// The credential lives in sessionStorage (this tab only), never in a URL or a cookie.

const STORE = 'corral.console.credential';

export function credential() {
  try { return sessionStorage.getItem(STORE) || ''; } catch { return ''; }
}

export function setCredential(value) {
  try {
    if (value) sessionStorage.setItem(STORE, value);
    else sessionStorage.removeItem(STORE);
  } catch { /* storage disabled: the credential lives until the tab's page goes */ }
}

/** An API answer that was not 2xx, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || '';
  }
}

let onUnauthorized = null;
/** Called with the ApiError when a call made while signed in answers 401. */
export function whenUnauthorized(fn) { onUnauthorized = fn; }

/**
 * `request('GET', '/admin/api/me')` → the parsed JSON (null for 204).
 * Throws ApiError with the answer's `error` message, or the status text.
 */
export async function request(method, path, { body, headers, token, signal } = {}) {
  const bearer = token ?? credential();
  const h = { Accept: 'application/json', ...(headers || {}) };
  if (bearer) h.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
      signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'The gateway could not be reached (network error).');
  }
  const text = await res.text().catch(() => '');
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const message = (data && typeof data.error === 'string' && data.error)
      || `${res.status} ${res.statusText || 'error'}`.trim();
    const err = new ApiError(res.status, message, data && data.code);
    if (res.status === 401 && token === undefined && onUnauthorized) onUnauthorized(err);
    throw err;
  }
  return data;
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, body, opts = {}) => request('POST', path, { ...opts, body });
export const del = (path, opts) => request('DELETE', path, opts);

/** A path segment, escaped. */
export const seg = (s) => encodeURIComponent(s === null || s === undefined ? '' : String(s));

/** A random UUID v4, also where crypto.randomUUID is missing (plain http on a LAN address). */
export function uuid() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
