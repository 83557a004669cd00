import { useCallback, useState } from "react";

/** The open conversation's id, kept in the URL's #fragment: a reload (or a shared link) reopens it. */
export function useHashId(): [string | null, (id: string | null) => void] {
  const [id, setId] = useState(() => decodeURIComponent(location.hash.slice(1)) || null);
  const set = useCallback((next: string | null) => {
    history.replaceState(null, "", next ? `#${encodeURIComponent(next)}` : location.pathname + location.search);
    setId(next);
  }, []);
  return [id, set];
}
