/** Who created or changed something, in Datadog's shape (an API key's name stands for the user). */
export const user = (id: string, name: string) => ({ id, name, handle: name });
