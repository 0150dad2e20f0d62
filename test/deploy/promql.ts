/**
 * Just enough PromQL reading for the dashboard/alert checks: which series a query
 * selects and which function call directly encloses each selector. Syntax itself is
 * checked by promtool (monitoring.test.ts); this only has to find selectors reliably.
 */

export interface SeriesSelector {
  metric: string;
  /** Innermost named function or aggregation around the selector (`rate`, `sum`, ...). */
  enclosingCall?: string;
}

const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile', 'limitk', 'limit_ratio']);
/** Keywords followed by a parenthesised list of label names, not expressions. */
const LABEL_LIST_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const OPERATOR_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan']);

/** Index just past the bracket that closes the one at `open` (strings inside are skipped). */
function skipBalanced(expr: string, open: number, opening: string, closing: string): number {
  let depth = 0;
  for (let i = open; i < expr.length; i++) {
    const char = expr[i] as string;
    if (char === '"' || char === "'" || char === '`') i = skipString(expr, i) - 1;
    else if (char === opening) depth++;
    else if (char === closing && --depth === 0) return i + 1;
  }
  throw new Error(`unbalanced ${opening} in: ${expr}`);
}

function skipString(expr: string, start: number): number {
  const quote = expr[start];
  for (let i = start + 1; i < expr.length; i++) {
    if (expr[i] === '\\' && quote !== '`') i++;
    else if (expr[i] === quote) return i + 1;
  }
  throw new Error(`unterminated string in: ${expr}`);
}

function skipSpace(expr: string, i: number): number {
  while (i < expr.length && /\s/.test(expr[i] as string)) i++;
  return i;
}

export function seriesSelectors(expr: string): SeriesSelector[] {
  const found: SeriesSelector[] = [];
  // One entry per open parenthesis: the call it belongs to, or '' for plain grouping.
  const calls: string[] = [];
  let pendingAggregation: string | undefined;
  let i = 0;
  while (i < expr.length) {
    const char = expr[i] as string;
    if (/\s/.test(char)) i++;
    else if (char === '"' || char === "'" || char === '`') i = skipString(expr, i);
    else if (char === '{') i = skipBalanced(expr, i, '{', '}'); // label matchers
    else if (char === '[') i = skipBalanced(expr, i, '[', ']'); // ranges and subqueries
    else if (char === '(') {
      calls.push(pendingAggregation ?? '');
      pendingAggregation = undefined;
      i++;
    } else if (char === ')') {
      calls.pop();
      i++;
    } else if (char === '#') {
      while (i < expr.length && expr[i] !== '\n') i++; // comment
    } else if (/[A-Za-z_:]/.test(char)) {
      const word = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(expr.slice(i))?.[0] as string;
      i += word.length;
      const next = skipSpace(expr, i);
      const keyword = word.toLowerCase();
      if (LABEL_LIST_KEYWORDS.has(keyword)) {
        if (expr[next] === '(') i = skipBalanced(expr, next, '(', ')');
      } else if (OPERATOR_KEYWORDS.has(keyword)) {
        // nothing to record
      } else if (expr[next] === '(') {
        pendingAggregation = word; // a function call or `sum(`
      } else if (AGGREGATIONS.has(keyword)) {
        pendingAggregation = word; // `sum by (...) (`: the call's parenthesis comes after the label list
      } else {
        const enclosingCall = [...calls].reverse().find((c) => c !== '');
        found.push(enclosingCall === undefined ? { metric: word } : { metric: word, enclosingCall });
      }
    } else if (/[0-9.]/.test(char)) {
      // A number or duration (`0.99`, `1e3`, `0x1f`, `5m`): never a metric name.
      i += /^(?:0x[0-9a-fA-F]+|[0-9.]+(?:[eE][+-]?[0-9]+)?)(?:ms|[smhdwy])*/.exec(expr.slice(i))?.[0].length || 1;
    } else if (char === '$') {
      i += /^\$\{?\w+\}?/.exec(expr.slice(i))?.[0].length ?? 1; // a Grafana variable outside a string
    } else i++; // numbers, operators, commas
  }
  return found;
}

/** Metric name of a Grafana `label_values(metric{...}, label)` variable query, if it is one. */
export function labelValuesMetric(query: string): string | undefined {
  return /^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)/.exec(query)?.[1];
}
