// The fetch world of wit/js.wit. componentize-js implements fetch() on wasi:http; an async
// export is run to completion (the component's event loop runs inside the call).
import { get, getAll } from "wasi:config/store@0.2.0-rc.1";

export async function httpGet(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw `fetch failed: ${e}`;
  }
  return `${response.status} ${await response.text()}`;
}

export async function httpStatus(url) {
  return (await fetch(url)).status;
}

export function configGet(key) {
  return get(key);
}

export function configAll() {
  return getAll();
}
