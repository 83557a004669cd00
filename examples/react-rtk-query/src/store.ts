import { configureStore } from "@reduxjs/toolkit";
import { useDispatch } from "react-redux";
import { chatApi } from "./chatApi";

export function makeStore() {
  return configureStore({
    reducer: { [chatApi.reducerPath]: chatApi.reducer },
    middleware: (getDefault) => getDefault().concat(chatApi.middleware),
  });
}

export type AppStore = ReturnType<typeof makeStore>;
export type RootState = ReturnType<AppStore["getState"]>;
export type AppDispatch = AppStore["dispatch"];
export const useAppDispatch = useDispatch.withTypes<AppDispatch>();
