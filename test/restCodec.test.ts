// The REST wire codec on the domain's own schemas: names come from the schemas, so an option
// added to a rule type is on the wire (and in messages) without a line in src/server/rest.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fddRuleOptionsSchema, monitorRuleOptionsSchema } from '../src/domain/ruleOptions.ts';
import { decode, encode, wireName, wireWords } from '../src/server/rest/codec.ts';
import { optionsToWire, ruleFromWire } from '../src/server/rest/rules.ts';

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail('expected a refusal');
};

describe('REST wire codec', () => {
  test('every option of every rule type has a snake_case wire name that reads back to it', () => {
    for (const schema of [monitorRuleOptionsSchema, fddRuleOptionsSchema]) {
      const defaults = schema.parse(schema === monitorRuleOptionsSchema ? { query: 'service:x' } : {}) as Record<string, unknown>;
      const wire = encode(schema, defaults) as Record<string, unknown>;
      for (const key of Object.keys(wire)) assert.match(key, /^[a-z]+(_[a-z]+)*$/, key);
      assert.deepEqual(decode(schema, wire, 'options'), defaults);
    }
    const monitor = { monitorIds: [{ id: 'm1', groups: ['host:a'] }], duration: 60, warmup: 0, failOnNoData: false, failOnNoGroupsFound: true };
    assert.deepEqual(encode(monitorRuleOptionsSchema, monitor), {
      monitor_ids: [{ id: 'm1', groups: ['host:a'] }],
      duration: 60,
      warmup: 0,
      fail_on_no_data: false,
      fail_on_no_groups_found: true,
    });
    assert.equal(wireName('minRelativeIncrease'), 'min_relative_increase');
  });

  test('a strict options object refuses an unknown or camelCase key, naming it and where it is', () => {
    assert.equal(
      refusal(() => decode(fddRuleOptionsSchema, { excludedResources: ['a'] }, 'configuration.rules[0].options')),
      'configuration.rules[0].options: unknown option "excludedResources"',
    );
    assert.equal(
      refusal(() => decode(monitorRuleOptionsSchema, { query: 'x', typo: 1 }, 'data.attributes.options')),
      'data.attributes.options: unknown option "typo"',
    );
  });

  test("Datadog's other names are read too; the field's own name wins beside one", () => {
    assert.deepEqual(decode(fddRuleOptionsSchema, { included_resources: ['GET /a'] }, 'options'), { allowedResources: ['GET /a'] });
    assert.deepEqual(decode(fddRuleOptionsSchema, { included_resources: ['GET /a'], allowed_resources: ['GET /b'] }, 'options'), { allowedResources: ['GET /b'] });
  });

  test('a wire rule becomes the domain rule input, and the stored options go back in wire names', () => {
    assert.deepEqual(ruleFromWire({ type: 'faulty_deployment_detection', name: 'fdd', dry_run: true, options: { min_relative_increase: 0.2 } }, 'data.attributes'), {
      name: 'fdd',
      dryRun: true,
      options: { faultyDeploymentDetection: { minRelativeIncrease: 0.2 } },
    });
    assert.match(
      refusal(() => ruleFromWire({ type: 'moniyor' }, 'configuration.rules[0]', 0)),
      /^invalid configuration: invalid rule at index 0: invalid rule type: moniyor \(must be monitor, faulty_deployment_detection, metric, webhook or freeze\)$/,
    );
    assert.equal(
      refusal(() => ruleFromWire({ type: 'monitor', options: 'x' }, 'data.attributes')),
      'data.attributes.options: must be an object',
    );
    assert.deepEqual(
      optionsToWire({ type: 'faulty_deployment_detection', options: { duration: 600, allowedResources: ['GET /a'], newErrorTypes: false, excludedResources: undefined } }),
      {
        duration: 600,
        allowed_resources: ['GET /a'],
        new_error_types: false,
      },
    );
  });

  test('messages speak the wire names of the schemas, leaving quoted user text alone', () => {
    const words = wireWords(monitorRuleOptionsSchema, fddRuleOptionsSchema);
    assert.equal(words('give either excludedResources or allowedResources, not both'), 'give either excluded_resources or allowed_resources, not both');
    assert.equal(
      words('a monitor rule needs a query or monitorIds; "monitorIds" stays, as does someOtherWord'),
      'a monitor rule needs a query or monitor_ids; "monitorIds" stays, as does someOtherWord',
    );
  });
});
