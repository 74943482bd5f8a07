import { builder } from './builder.ts';
import './scalars.ts';
import './gate.ts';
import './rule.ts';
import './apiKey.ts';
import './monitor.ts';
import './evaluation.ts';
import './insights.ts';
import './freeze.ts';
import './backtest.ts';
import './notification.ts';

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});

/** Sorted, so the printed SDL is stable. Importing this opens nothing. */
export const schema = builder.toSchema();
