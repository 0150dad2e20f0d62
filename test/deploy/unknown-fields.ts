/**
 * Finds fields the Kubernetes API does not know (a misspelt `readinesProbe` is silently
 * dropped by a lenient apply and only fails later). The kubernetes-models validators
 * check types but accept extra keys, so this walks an object against the OpenAPI
 * attribute maps that @kubernetes/client-node generates for every API type.
 */
import * as models from '@kubernetes/client-node/dist/gen/models/all.js';

interface Attribute {
  name: string;
  baseName: string;
  type: string;
}

type ModelClass = { attributeTypeMap?: Attribute[]; discriminator?: unknown };

const registry = models as unknown as Record<string, ModelClass | undefined>;

/** The model type of a built-in object, e.g. `apps/v1` + `Deployment` -> `V1Deployment`. */
export function modelTypeName(apiVersion: string, kind: string): string | undefined {
  const version = apiVersion.split('/').pop() ?? '';
  const name = `${version.charAt(0).toUpperCase()}${version.slice(1)}${kind}`;
  return registry[name]?.attributeTypeMap ? name : undefined;
}

const ARRAY = /^Array<(.+)>$/;
const MAP = /^\{ \[key: string\]: (.+); \}$/;
const SCALARS = new Set(['string', 'number', 'boolean', 'Date', 'IntOrString', 'any', 'object']);

/** JSON paths (`spec.template.spec.containers[0].readinesProbe`) of fields `typeName` does not declare. */
export function unknownFields(value: unknown, typeName: string, path = ''): string[] {
  if (value === null || value === undefined) return [];
  const array = ARRAY.exec(typeName);
  if (array) {
    if (!Array.isArray(value)) return [];
    return value.flatMap((item, index) => unknownFields(item, array[1] as string, `${path}[${index}]`));
  }
  const map = MAP.exec(typeName);
  if (map) {
    if (typeof value !== 'object') return [];
    return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) => unknownFields(item, map[1] as string, `${path}.${key}`));
  }
  if (SCALARS.has(typeName)) return [];
  const model = registry[typeName];
  if (!model?.attributeTypeMap) throw new Error(`no model for type ${typeName} at ${path || '<root>'}`);
  if (typeof value !== 'object' || Array.isArray(value)) return []; // type errors are the validators' job
  const attributes = new Map(model.attributeTypeMap.map((a) => [a.baseName, a.type]));
  const found: string[] = [];
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    const fieldPath = path === '' ? key : `${path}.${key}`;
    const type = attributes.get(key);
    if (type === undefined) found.push(fieldPath);
    else found.push(...unknownFields(item, type, fieldPath));
  }
  return found;
}
