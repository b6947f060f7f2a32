export const ROOT: string;
export const SCHEMAS: string;
export const OUTPUT: string;
/** The text generated.ts must have. */
export function generate(): Promise<string>;
