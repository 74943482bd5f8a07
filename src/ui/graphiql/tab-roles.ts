// GraphiQL 5's tab bar (@graphiql/react's Tab) puts role="tab" and aria-selected on each <li>
// and the tab's own <button> (and, with several tabs, a close button) inside it: a tab that
// holds focusable controls (axe: nested-interactive, serious), so a screen reader meets a
// button it cannot tell is the tab. GraphiQL already labels its tab panel by that button's id
// (aria-labelledby="graphiql-session-tab-N"), so the tab semantics belong on the button: the
// <li> becomes presentational and the button takes role="tab" and aria-selected.
//
// React owns these attributes and writes aria-selected again whenever the active tab changes,
// and renders new <li>s as tabs are added: a MutationObserver moves them every time, and leaves
// alone what is already right, so its own writes end the loop. test/explorer.a11y.test.ts runs
// axe on /graphql with one tab and with two, and checks the selection follows a tab switch: a
// GraphiQL upgrade that renames these classes fails there, not silently.
const TAB = 'li.graphiql-tab';
const TAB_BUTTON = ':scope > .graphiql-tab-button';

function moveTabSemantics(root: ParentNode): void {
  for (const item of root.querySelectorAll<HTMLElement>(TAB)) {
    const button = item.querySelector<HTMLElement>(TAB_BUTTON);
    if (!button) continue;
    if (item.getAttribute('role') !== 'presentation') item.setAttribute('role', 'presentation');
    const selected = item.getAttribute('aria-selected') ?? (button.hasAttribute('aria-selected') ? null : String(item.classList.contains('graphiql-tab-active')));
    if (selected !== null && button.getAttribute('aria-selected') !== selected) button.setAttribute('aria-selected', selected);
    if (item.hasAttribute('aria-selected')) item.removeAttribute('aria-selected');
    if (button.getAttribute('role') !== 'tab') button.setAttribute('role', 'tab');
  }
}

/** Keeps GraphiQL's tabs accessible under `root` for the life of the page. */
export function keepTabsAccessible(root: HTMLElement): void {
  moveTabSemantics(root);
  new MutationObserver(() => moveTabSemantics(root)).observe(root, { subtree: true, childList: true, attributes: true, attributeFilter: ['role', 'aria-selected', 'class'] });
}
