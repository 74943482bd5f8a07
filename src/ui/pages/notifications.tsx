import { useState } from 'preact/hooks';
import { ApiError, gql } from '../api.ts';
import { ErrorNote, Page, Time, useQuery } from '../components.tsx';
import { can, type Viewer } from '../viewer.ts';

// Notifications: the channels this key may see (every env they serve is its own), their
// subscriptions, and the latest deliveries with how each went. Changes go through the API
// (createNotificationChannel, createNotificationSubscription); a channel can be tested here.

const QUERY = `query Notifications {
  notificationChannels(first: 100) { id name type url envs hasSecret createdBy }
  notificationSubscriptions(first: 100) { id env service gateId events channel { id name } }
  notificationDeliveries(first: 50) { id event status attempts lastStatus lastError deliveredAt createdAt env evaluationId channel { id name } }
}`;

interface Channel {
  id: string;
  name: string;
  type: 'WEBHOOK' | 'SLACK';
  url: string;
  envs: string[];
  hasSecret: boolean;
  createdBy: string;
}

interface Subscription {
  id: string;
  env: string;
  service: string | null;
  gateId: string | null;
  events: string[];
  channel: { id: string; name: string } | null;
}

interface Delivery {
  id: string;
  event: string;
  status: 'PENDING' | 'DELIVERING' | 'DELIVERED' | 'FAILED';
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
  deliveredAt: string | null;
  createdAt: string;
  env: string;
  evaluationId: string | null;
  channel: { id: string; name: string } | null;
}

const asError = (err: unknown) => (err instanceof ApiError ? err : new ApiError([{ message: String(err) }]));
const lower = (s: string) => s.toLowerCase().replace(/_/g, ' ');

export function NotificationsPage({ who }: { who: Viewer }) {
  const q = useQuery<{ notificationChannels: Channel[]; notificationSubscriptions: Subscription[]; notificationDeliveries: Delivery[] }>(QUERY, {});
  const [error, setError] = useState<ApiError | null>(null);
  const [sent, setSent] = useState<string | null>(null);
  const writer = can(who, 'GATES_WRITE');
  const channels = q.data?.notificationChannels ?? [];
  const subscriptions = q.data?.notificationSubscriptions ?? [];
  const deliveries = q.data?.notificationDeliveries ?? [];
  const test = async (c: Channel) => {
    setError(null);
    setSent(null);
    try {
      await gql(`mutation SendTestNotification($id: ID!) { sendTestNotification(channelId: $id) { id } }`, { id: c.id });
      setSent(`A test notification to ${c.name} is queued.`);
      void q.refetch();
    } catch (err) {
      setError(asError(err));
    }
  };
  return (
    <Page
      title="Notifications"
      actions={
        <button type="button" class="secondary" onClick={() => void q.refetch()}>
          Refresh
        </button>
      }
    >
      <p class="muted small">
        Channels are told of failed, recovered and overridden evaluations and of source errors, as their subscriptions ask. Each delivery is retried with backoff until it succeeds
        or runs out of attempts.
      </p>
      <ErrorNote error={q.error ?? error} />
      {sent && (
        <p role="status" class="small">
          {sent}
        </p>
      )}
      <h2>Channels</h2>
      <table data-testid="notification-channels">
        <caption class="visually-hidden">Notification channels</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Type</th>
            <th scope="col">URL</th>
            <th scope="col">Envs</th>
            <th scope="col">Signed</th>
            {writer && <th scope="col">Action</th>}
          </tr>
        </thead>
        <tbody>
          {channels.map((c) => (
            <tr key={c.id} data-testid="notification-channel">
              <td>{c.name}</td>
              <td>{lower(c.type)}</td>
              <td class="mono small">{c.url}</td>
              <td>{c.envs.join(', ')}</td>
              <td>{c.hasSecret ? 'yes' : 'no'}</td>
              {writer && (
                <td>
                  <button type="button" class="small secondary" onClick={() => test(c)} aria-label={`Send a test notification to ${c.name}`}>
                    Send test
                  </button>
                </td>
              )}
            </tr>
          ))}
          {!q.loading && channels.length === 0 && (
            <tr>
              <td colSpan={writer ? 6 : 5} class="muted">
                No channel. Create one with the createNotificationChannel mutation.
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <h2>Subscriptions</h2>
      <table data-testid="notification-subscriptions">
        <caption class="visually-hidden">Notification subscriptions</caption>
        <thead>
          <tr>
            <th scope="col">Channel</th>
            <th scope="col">Env</th>
            <th scope="col">What</th>
            <th scope="col">Events</th>
          </tr>
        </thead>
        <tbody>
          {subscriptions.map((s) => (
            <tr key={s.id} data-testid="notification-subscription">
              <td>{s.channel?.name ?? '—'}</td>
              <td>{s.env}</td>
              <td>{s.gateId ? <a href={`/gates/${s.gateId}`}>one gate</a> : (s.service ?? <span class="muted">every service</span>)}</td>
              <td>{s.events.map(lower).join(', ')}</td>
            </tr>
          ))}
          {!q.loading && subscriptions.length === 0 && (
            <tr>
              <td colSpan={4} class="muted">
                No subscription.
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <h2>Recent deliveries</h2>
      <table data-testid="notification-deliveries">
        <caption class="visually-hidden">Recent notification deliveries</caption>
        <thead>
          <tr>
            <th scope="col">Queued</th>
            <th scope="col">Event</th>
            <th scope="col">Channel</th>
            <th scope="col">Status</th>
            <th scope="col">Attempts</th>
            <th scope="col">Last answer</th>
            <th scope="col">Evaluation</th>
          </tr>
        </thead>
        <tbody>
          {deliveries.map((d) => (
            <tr key={d.id} data-testid="notification-delivery" data-status={d.status}>
              <td>
                <Time at={d.createdAt} />
              </td>
              <td>{lower(d.event)}</td>
              <td>{d.channel?.name ?? '—'}</td>
              <td>
                {lower(d.status)}
                {d.deliveredAt && (
                  <>
                    {' '}
                    <Time at={d.deliveredAt} />
                  </>
                )}
              </td>
              <td>{d.attempts}</td>
              <td class="small">{d.lastError ?? (d.lastStatus ? `HTTP ${d.lastStatus}` : '—')}</td>
              <td>{d.evaluationId ? <a href={`/evaluations/${d.evaluationId}`}>{d.env}</a> : '—'}</td>
            </tr>
          ))}
          {!q.loading && deliveries.length === 0 && (
            <tr>
              <td colSpan={7} class="muted">
                Nothing delivered yet.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </Page>
  );
}
