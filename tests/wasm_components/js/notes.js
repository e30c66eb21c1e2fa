// The notes world of wit/js.wit: state lives in the instance's memory, as a JavaScript array.
const kept = [];

export function addNote(text) {
  kept.push(text);
  return kept.length;
}

export function listNotes() {
  return kept;
}

export function stats() {
  const longest = kept.reduce((a, b) => (a === undefined || b.length > a.length ? b : a), undefined);
  return { count: kept.length, longest };
}

// A function returning result<T, E>: a thrown value is the `err`.
export function find(prefix) {
  const found = kept.find((note) => note.startsWith(prefix));
  if (found === undefined) {
    throw `no note starts with ${JSON.stringify(prefix)}`;
  }
  return found;
}

export function shout(text) {
  return `${text.toUpperCase()}!`;
}
